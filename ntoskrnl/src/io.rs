//! I/O manager: driver and device objects, the object namespace (device names, symbolic links),
//! IRPs with their stack locations, IoCallDriver and IoCompleteRequest with completion routines,
//! and the host-side request API shaped like Win32 (open by name, DeviceIoControl, read, write, close).
//!
//! Every IRP dispatched and completed is recorded in an arch-independent trace ([`IrpEvent`]) that the
//! tests snapshot.

use std::collections::HashMap;

use dbt::Prot;

use crate::export::Export;
use crate::status::{self, NtStatus};
use crate::verifier::{self, irql, Rule, StopCode};
use crate::{ex, export_table, ke, mm, rtl, KResult, Kernel, KernelError};

/// IRP major function codes.
pub mod major {
    /// IRP_MJ_CREATE.
    pub const CREATE: u8 = 0x00;
    /// IRP_MJ_CLOSE.
    pub const CLOSE: u8 = 0x02;
    /// IRP_MJ_READ.
    pub const READ: u8 = 0x03;
    /// IRP_MJ_WRITE.
    pub const WRITE: u8 = 0x04;
    /// IRP_MJ_DEVICE_CONTROL.
    pub const DEVICE_CONTROL: u8 = 0x0e;
    /// IRP_MJ_INTERNAL_DEVICE_CONTROL.
    pub const INTERNAL_DEVICE_CONTROL: u8 = 0x0f;
    /// IRP_MJ_CLEANUP.
    pub const CLEANUP: u8 = 0x12;
    /// IRP_MJ_POWER.
    pub const POWER: u8 = 0x16;
    /// IRP_MJ_PNP.
    pub const PNP: u8 = 0x1b;
    /// Number of major functions (IRP_MJ_MAXIMUM_FUNCTION + 1).
    pub const COUNT: u64 = 0x1c;
}

const MAJOR_NAMES: [&str; 28] = [
    "CREATE",
    "CREATE_NAMED_PIPE",
    "CLOSE",
    "READ",
    "WRITE",
    "QUERY_INFORMATION",
    "SET_INFORMATION",
    "QUERY_EA",
    "SET_EA",
    "FLUSH_BUFFERS",
    "QUERY_VOLUME_INFORMATION",
    "SET_VOLUME_INFORMATION",
    "DIRECTORY_CONTROL",
    "FILE_SYSTEM_CONTROL",
    "DEVICE_CONTROL",
    "INTERNAL_DEVICE_CONTROL",
    "SHUTDOWN",
    "LOCK_CONTROL",
    "CLEANUP",
    "CREATE_MAILSLOT",
    "QUERY_SECURITY",
    "SET_SECURITY",
    "POWER",
    "SYSTEM_CONTROL",
    "DEVICE_CHANGE",
    "QUERY_QUOTA",
    "SET_QUOTA",
    "PNP",
];

/// `IRP_MJ_NAME` for a major function code.
pub fn major_name(major: u8) -> String {
    MAJOR_NAMES
        .get(major as usize)
        .map(|n| format!("IRP_MJ_{n}"))
        .unwrap_or_else(|| format!("IRP_MJ_{major:#x}"))
}

// Object type codes (the Type field of I/O objects).
const IO_TYPE_DRIVER: u16 = 4;
const IO_TYPE_DEVICE: u16 = 3;
const IO_TYPE_FILE: u16 = 5;
const IO_TYPE_IRP: u16 = 6;
const IO_TYPE_DEVICE_OBJECT_EXTENSION: u16 = 13;

/// Device object flags.
pub const DO_BUFFERED_IO: u32 = 0x0000_0004;
/// DO_EXCLUSIVE.
pub const DO_EXCLUSIVE: u32 = 0x0000_0008;
/// DO_DIRECT_IO.
pub const DO_DIRECT_IO: u32 = 0x0000_0010;
/// DO_DEVICE_HAS_NAME.
pub const DO_DEVICE_HAS_NAME: u32 = 0x0000_0040;
/// DO_DEVICE_INITIALIZING.
pub const DO_DEVICE_INITIALIZING: u32 = 0x0000_0080;

// IO_STACK_LOCATION.Control bits.
const SL_PENDING_RETURNED: u8 = 0x01;
const SL_INVOKE_ON_CANCEL: u8 = 0x20;
const SL_INVOKE_ON_SUCCESS: u8 = 0x40;
const SL_INVOKE_ON_ERROR: u8 = 0x80;

// Transfer methods of an IOCTL code.
const METHOD_BUFFERED: u32 = 0;
const METHOD_IN_DIRECT: u32 = 1;
const METHOD_OUT_DIRECT: u32 = 2;

/// Pool tag the I/O manager charges its own allocations to.
const IO_TAG: u32 = u32::from_le_bytes(*b"IoMg");
/// Owner name of the I/O manager's pool blocks (not a driver's).
const IO_OWNER: &str = "ntoskrnl.exe";

/// One entry of the IRP trace (arch-independent: no addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IrpEvent {
    /// IoCallDriver handed the IRP to a driver's dispatch routine.
    Dispatch {
        /// Sequence number of the IRP.
        irp: u32,
        /// Driver image (or host driver) that received it.
        driver: String,
        /// Major function.
        major: u8,
        /// Minor function.
        minor: u8,
        /// I/O control code, for (internal) device control.
        ioctl: Option<u32>,
    },
    /// The dispatch routine returned.
    Returned {
        /// IRP sequence number.
        irp: u32,
        /// Driver whose dispatch routine returned.
        driver: String,
        /// What it returned.
        status: NtStatus,
    },
    /// IoCompleteRequest was called.
    Complete {
        /// IRP sequence number.
        irp: u32,
        /// Who called IoCompleteRequest.
        by: String,
        /// IoStatus.Status.
        status: NtStatus,
        /// IoStatus.Information.
        information: u64,
    },
    /// A completion routine ran.
    CompletionRoutine {
        /// IRP sequence number.
        irp: u32,
        /// Driver owning the routine.
        driver: String,
        /// Its return value.
        result: NtStatus,
    },
    /// The request's call path failed (guest fault, trap, bug check): the IRP was abandoned.
    Aborted {
        /// IRP sequence number.
        irp: u32,
        /// What went wrong, in one line.
        reason: String,
    },
    /// The IRP finished its completion (reached the top of the stack).
    Done {
        /// IRP sequence number.
        irp: u32,
        /// Final IoStatus.Status.
        status: NtStatus,
        /// Final IoStatus.Information.
        information: u64,
    },
}

impl std::fmt::Display for IrpEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IrpEvent::Dispatch {
                irp,
                driver,
                major,
                minor,
                ioctl,
            } => {
                write!(f, "irp#{irp} -> {driver} {}", major_name(*major))?;
                if *major == major::PNP || *major == major::POWER {
                    write!(f, " minor={minor:#04x}")?;
                }
                if let Some(code) = ioctl {
                    write!(f, " ioctl={code:#010x}")?;
                }
                Ok(())
            }
            IrpEvent::Returned {
                irp,
                driver,
                status,
            } => {
                write!(
                    f,
                    "irp#{irp} <- {driver} returned {}",
                    status::name(*status)
                )
            }
            IrpEvent::Complete {
                irp,
                by,
                status,
                information,
            } => {
                write!(
                    f,
                    "irp#{irp} completed by {by}: {} info={information}",
                    status::name(*status)
                )
            }
            IrpEvent::CompletionRoutine {
                irp,
                driver,
                result,
            } => {
                write!(
                    f,
                    "irp#{irp} completion routine of {driver} -> {}",
                    status::name(*result)
                )
            }
            IrpEvent::Aborted { irp, reason } => write!(f, "irp#{irp} aborted: {reason}"),
            IrpEvent::Done {
                irp,
                status,
                information,
            } => {
                write!(
                    f,
                    "irp#{irp} done: {} info={information}",
                    status::name(*status)
                )
            }
        }
    }
}

/// A loaded driver (DRIVER_OBJECT in guest memory).
#[derive(Debug, Clone)]
pub struct DriverRecord {
    /// Guest address of the DRIVER_OBJECT.
    pub object: u64,
    /// Service name, e.g. `ioctl`.
    pub name: String,
    /// Image file name, or a host driver's name.
    pub image: String,
    /// Pool blocks the I/O manager allocated for the object (its name strings).
    blocks: Vec<u64>,
}

/// A device object known to the I/O manager.
#[derive(Debug, Clone)]
pub struct DeviceRecord {
    /// Owning DRIVER_OBJECT.
    pub driver: u64,
    /// Name in the object namespace, e.g. `\Device\IcaIoctl`.
    pub name: Option<String>,
    /// The device this one is attached on top of.
    pub attached_to: Option<u64>,
    /// Return address of the IoCreateDevice call that created it, if a driver did.
    pub site: Option<u64>,
}

/// Who created an IRP, which decides what happens when its completion reaches the top.
#[derive(Debug, Clone)]
enum IrpOrigin {
    /// A host request (open, ioctl, read, write, close, PnP): the host collects the result.
    Host,
    /// IoBuildDeviceIoControlRequest: copy back, fill the IO_STATUS_BLOCK, signal the event, free.
    Built {
        user_iosb: u64,
        user_event: u64,
        output: u64,
        output_len: u64,
        buffered: bool,
    },
    /// IoAllocateIrp: the driver owns it.
    Allocated,
}

#[derive(Debug, Clone)]
struct IrpRecord {
    id: u32,
    origin: IrpOrigin,
    completed: bool,
    status: NtStatus,
    information: u64,
    /// The driver image that allocated (or built) it and the return address of that call.
    owner: Option<(String, Option<u64>)>,
    /// Who called IoCompleteRequest last, and from where.
    last_completion: Option<(String, Option<u64>)>,
    /// Stack locations the completion passed with SL_PENDING_RETURNED set.
    marked_pending: Vec<u64>,
}

/// An open handle of the host-side request API.
#[derive(Debug, Clone, Copy)]
struct OpenFile {
    file_object: u64,
    device: u64,
}

/// I/O manager state.
#[derive(Debug, Default)]
pub struct IoManager {
    /// Loaded drivers.
    pub drivers: Vec<DriverRecord>,
    /// Live device objects by address.
    pub devices: HashMap<u64, DeviceRecord>,
    names: HashMap<String, u64>,
    /// Symbolic links: normalized name -> (name as created, target).
    links: HashMap<String, (String, String)>,
    irps: HashMap<u64, IrpRecord>,
    next_irp_id: u32,
    handles: HashMap<u32, OpenFile>,
    next_handle: u32,
    /// Every IRP dispatch and completion, in order.
    pub trace: Vec<IrpEvent>,
    invalid_request_routine: u64,
}

/// Result of a host request: the final IoStatus and any output bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoResult {
    /// IoStatus.Status.
    pub status: NtStatus,
    /// IoStatus.Information.
    pub information: u64,
    /// Bytes returned to the caller (at most the output buffer's length).
    pub output: Vec<u8>,
}

/// Host functions that stand in for I/O-manager-owned guest callbacks.
static INTERNAL: &[Export] = export_table![
    stdcall IopInvalidDeviceRequest => invalid_device_request(device_object: u64, irp: u64);
];

pub(crate) fn init(k: &mut Kernel) -> KResult<()> {
    let routine = k.host_function(&INTERNAL[0]);
    k.io.invalid_request_routine = routine;
    ke::init(k)
}

/// Normalizes an object-namespace name for lookup: case-insensitive, `\DosDevices\` and `\GLOBAL??\`
/// are `\??\`, and Win32 device paths `\\.\X` are `\??\X`.
pub fn normalize_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    for prefix in ["\\dosdevices\\", "\\global??\\", "\\\\.\\", "\\\\?\\"] {
        if let Some(rest) = lower.strip_prefix(prefix) {
            return format!("\\??\\{rest}");
        }
    }
    lower
}

impl IoManager {
    /// The device object a name refers to, following symbolic links.
    pub fn resolve(&self, name: &str) -> Option<u64> {
        let mut key = normalize_name(name);
        for _ in 0..8 {
            if let Some(&dev) = self.names.get(&key) {
                return Some(dev);
            }
            key = normalize_name(&self.links.get(&key)?.1);
        }
        None
    }

    /// Symbolic links: (link name, target) as the driver created them.
    pub fn symbolic_links(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self.links.values().cloned().collect();
        v.sort();
        v
    }

    /// The record of a driver object.
    pub fn driver(&self, object: u64) -> Option<&DriverRecord> {
        self.drivers.iter().find(|d| d.object == object)
    }

    /// Takes the IRP trace recorded so far.
    pub fn take_trace(&mut self) -> Vec<IrpEvent> {
        std::mem::take(&mut self.trace)
    }

    /// IRPs still alive (not freed).
    pub fn live_irps(&self) -> usize {
        self.irps.len()
    }
}

// ---------------------------------------------------------------------------------------------
// Drivers and devices

/// Creates a DRIVER_OBJECT (with its extension and names) for a driver about to be initialized.
/// Every major function starts out as the I/O manager's "invalid device request" routine.
pub fn create_driver_object(
    k: &mut Kernel,
    service: &str,
    image: &str,
    start: u64,
    size: u64,
) -> KResult<u64> {
    let l = k.layout;
    let total = l.driver_object_size + l.driver_extension_size;
    let obj = ex::allocate(k, total, IO_TAG, IO_OWNER.into())?;
    let ext = obj + l.driver_object_size;
    k.m.mem
        .write_u16(obj + l.driver_object_type, IO_TYPE_DRIVER)?;
    k.m.mem.write_u16(
        obj + l.driver_object_size_field,
        l.driver_object_size as u16,
    )?;
    k.write_ptr(obj + l.driver_object_driver_start, start)?;
    k.m.mem
        .write_u32(obj + l.driver_object_driver_size, size as u32)?;
    k.write_ptr(obj + l.driver_object_driver_extension, ext)?;
    k.write_ptr(ext + l.driver_extension_driver_object, obj)?;
    let name = rtl::alloc_unicode_string(k, &format!("\\Driver\\{service}"), IO_TAG)?;
    copy_unicode_struct(k, name, obj + l.driver_object_driver_name)?;
    let key = rtl::alloc_unicode_string(k, service, IO_TAG)?;
    copy_unicode_struct(k, key, ext + l.driver_extension_service_key_name)?;
    let invalid = k.io.invalid_request_routine;
    for i in 0..major::COUNT {
        k.write_ptr(
            obj + l.driver_object_major_function + i * k.ptr_size(),
            invalid,
        )?;
    }
    k.io.drivers.push(DriverRecord {
        object: obj,
        name: service.into(),
        image: image.into(),
        blocks: vec![name, key],
    });
    Ok(obj)
}

/// Frees a driver object and what the I/O manager allocated with it.
pub fn delete_driver_object(k: &mut Kernel, object: u64) -> KResult<()> {
    let Some(pos) = k.io.drivers.iter().position(|d| d.object == object) else {
        return Err(KernelError::Unsupported(format!(
            "{object:#x} is not a driver object"
        )));
    };
    let record = k.io.drivers.remove(pos);
    free_driver_object_extensions(k, object)?;
    for block in record.blocks {
        ex::free(k, block, None)?;
    }
    ex::free(k, object, None)
}

fn copy_unicode_struct(k: &mut Kernel, from: u64, to: u64) -> KResult<()> {
    let size = k.layout.unicode_string_size as usize;
    let bytes = k.m.mem.read_vec(from, size)?;
    Ok(k.m.mem.write_bytes(to, &bytes)?)
}

/// Name of the driver owning a device object (its image name), for traces.
pub fn device_driver_name(k: &Kernel, device: u64) -> String {
    let driver = k
        .read_ptr(device + k.layout.device_object_driver_object)
        .unwrap_or(0);
    k.io.driver(driver)
        .map(|d| d.image.clone())
        .unwrap_or_else(|| format!("driver@{driver:#x}"))
}

/// IoCreateDevice(DriverObject, DeviceExtensionSize, DeviceName, DeviceType, DeviceCharacteristics,
/// Exclusive, DeviceObject).
pub fn create_device(
    k: &mut Kernel,
    driver: u64,
    extension_size: u32,
    name: u64,
    device_type: u32,
    characteristics: u32,
    exclusive: bool,
    out: u64,
) -> KResult<NtStatus> {
    let l = k.layout;
    let name = if name != 0 {
        Some(rtl::read_unicode_string(k, name)?)
    } else {
        None
    };
    if let Some(n) = &name {
        if k.io.names.contains_key(&normalize_name(n)) {
            return Ok(status::STATUS_OBJECT_NAME_COLLISION);
        }
    }
    let dev_size = l.device_object_size.div_ceil(16) * 16;
    let ext_size = (extension_size as u64).div_ceil(16) * 16;
    let total = dev_size + ext_size + l.devobj_extension_size;
    let dev = ex::allocate(k, total, IO_TAG, IO_OWNER.into())?;
    let devobj_ext = dev + dev_size + ext_size;
    k.m.mem
        .write_u16(dev + l.device_object_type, IO_TYPE_DEVICE)?;
    k.m.mem.write_u16(
        dev + l.device_object_size_field,
        (dev_size + ext_size) as u16,
    )?;
    k.write_ptr(dev + l.device_object_driver_object, driver)?;
    let first = k.read_ptr(driver + l.driver_object_device_object)?;
    k.write_ptr(dev + l.device_object_next_device, first)?;
    k.write_ptr(driver + l.driver_object_device_object, dev)?;
    let mut flags = DO_DEVICE_INITIALIZING;
    if exclusive {
        flags |= DO_EXCLUSIVE;
    }
    if name.is_some() {
        flags |= DO_DEVICE_HAS_NAME;
    }
    k.m.mem.write_u32(dev + l.device_object_flags, flags)?;
    k.m.mem
        .write_u32(dev + l.device_object_characteristics, characteristics)?;
    k.write_ptr(
        dev + l.device_object_device_extension,
        if extension_size > 0 {
            dev + dev_size
        } else {
            0
        },
    )?;
    k.m.mem
        .write_u32(dev + l.device_object_device_type, device_type)?;
    k.m.mem.write_u8(dev + l.device_object_stack_size, 1)?;
    k.write_ptr(dev + l.device_object_device_object_extension, devobj_ext)?;
    k.m.mem.write_u16(
        devobj_ext + l.devobj_extension_type,
        IO_TYPE_DEVICE_OBJECT_EXTENSION,
    )?;
    k.m.mem.write_u16(
        devobj_ext + l.devobj_extension_size_field,
        l.devobj_extension_size as u16,
    )?;
    k.write_ptr(devobj_ext + l.devobj_extension_device_object, dev)?;
    if let Some(n) = &name {
        k.io.names.insert(normalize_name(n), dev);
    }
    let site = k.call_site().map(|s| s.address);
    k.io.devices.insert(
        dev,
        DeviceRecord {
            driver,
            name,
            attached_to: None,
            site,
        },
    );
    k.write_ptr(out, dev)?;
    Ok(status::STATUS_SUCCESS)
}

/// IoDeleteDevice(DeviceObject).
pub fn delete_device(k: &mut Kernel, dev: u64) -> KResult<()> {
    let l = k.layout;
    let Some(record) = k.io.devices.remove(&dev) else {
        return Err(KernelError::bug_check(
            0xC4,
            format!("IoDeleteDevice of {dev:#x}, which is not a device object"),
        ));
    };
    if let Some(n) = &record.name {
        k.io.names.remove(&normalize_name(n));
    }
    // Unlink from the driver's device list.
    let next = k.read_ptr(dev + l.device_object_next_device)?;
    let mut link = record.driver + l.driver_object_device_object;
    loop {
        let cur = k.read_ptr(link)?;
        if cur == 0 {
            break;
        }
        if cur == dev {
            k.write_ptr(link, next)?;
            break;
        }
        link = cur + l.device_object_next_device;
    }
    ex::free(k, dev, None)
}

/// IoCreateSymbolicLink(SymbolicLinkName, DeviceName).
pub fn create_symbolic_link(k: &mut Kernel, link: u64, target: u64) -> KResult<NtStatus> {
    let link = rtl::read_unicode_string(k, link)?;
    let target = rtl::read_unicode_string(k, target)?;
    let key = normalize_name(&link);
    if k.io.links.contains_key(&key) || k.io.names.contains_key(&key) {
        return Ok(status::STATUS_OBJECT_NAME_COLLISION);
    }
    k.io.links.insert(key, (link, target));
    Ok(status::STATUS_SUCCESS)
}

/// IoDeleteSymbolicLink(SymbolicLinkName).
pub fn delete_symbolic_link(k: &mut Kernel, link: u64) -> KResult<NtStatus> {
    let link = rtl::read_unicode_string(k, link)?;
    Ok(match k.io.links.remove(&normalize_name(&link)) {
        Some(_) => status::STATUS_SUCCESS,
        None => status::STATUS_OBJECT_NAME_NOT_FOUND,
    })
}

/// Creates a symbolic link by name (device interfaces use it): STATUS_OBJECT_NAME_COLLISION if the
/// name is taken.
pub(crate) fn add_symbolic_link_by_name(k: &mut Kernel, link: &str, target: &str) -> NtStatus {
    let key = normalize_name(link);
    if k.io.links.contains_key(&key) || k.io.names.contains_key(&key) {
        return status::STATUS_OBJECT_NAME_COLLISION;
    }
    k.io.links
        .insert(key, (link.to_string(), target.to_string()));
    status::STATUS_SUCCESS
}

/// Removes a symbolic link by name; returns whether it existed.
pub(crate) fn remove_symbolic_link_by_name(k: &mut Kernel, link: &str) -> bool {
    k.io.links.remove(&normalize_name(link)).is_some()
}

/// IoGetAttachedDevice(DeviceObject): the top of the stack above `dev`.
pub fn get_attached_device(k: &mut Kernel, dev: u64) -> KResult<u64> {
    let mut top = dev;
    for _ in 0..64 {
        let above = k.read_ptr(top + k.layout.device_object_attached_device)?;
        if above == 0 {
            return Ok(top);
        }
        top = above;
    }
    Err(KernelError::Unsupported(format!(
        "device stack above {dev:#x} is cyclic"
    )))
}

/// IoGetAttachedDeviceReference: as IoGetAttachedDevice, plus an object reference the caller drops
/// with ObDereferenceObject.
pub fn get_attached_device_reference(k: &mut Kernel, dev: u64) -> KResult<u64> {
    let top = get_attached_device(k, dev)?;
    crate::ob::reference(k, top);
    Ok(top)
}

/// IoAttachDeviceToDeviceStack(SourceDevice, TargetDevice) -> the device attached to.
pub fn attach_device_to_device_stack(k: &mut Kernel, source: u64, target: u64) -> KResult<u64> {
    let l = k.layout;
    let top = get_attached_device(k, target)?;
    let stack_size = k.m.mem.read_u8(top + l.device_object_stack_size)?;
    let alignment =
        k.m.mem
            .read_u32(top + l.device_object_alignment_requirement)?;
    k.write_ptr(top + l.device_object_attached_device, source)?;
    k.m.mem.write_u8(
        source + l.device_object_stack_size,
        stack_size.saturating_add(1),
    )?;
    let own_alignment =
        k.m.mem
            .read_u32(source + l.device_object_alignment_requirement)?;
    k.m.mem.write_u32(
        source + l.device_object_alignment_requirement,
        own_alignment.max(alignment),
    )?;
    if let Some(rec) = k.io.devices.get_mut(&source) {
        rec.attached_to = Some(top);
    }
    Ok(top)
}

/// IoDetachDevice(TargetDevice): detaches whatever is attached directly above it.
pub fn detach_device(k: &mut Kernel, target: u64) -> KResult<()> {
    let l = k.layout;
    let above = k.read_ptr(target + l.device_object_attached_device)?;
    k.write_ptr(target + l.device_object_attached_device, 0)?;
    if let Some(rec) = k.io.devices.get_mut(&above) {
        rec.attached_to = None;
    }
    Ok(())
}

/// IoIsWdmVersionAvailable(Major, Minor): WDM 1.x through 6.x.
pub fn is_wdm_version_available(_k: &mut Kernel, major: u8, _minor: u8) -> KResult<bool> {
    Ok(major <= 6)
}

// ---------------------------------------------------------------------------------------------
// IRPs

fn irp_size(k: &Kernel, stack_size: u8) -> u64 {
    k.layout.irp_size + stack_size as u64 * k.layout.io_stack_location_size
}

/// Initializes an IRP in place (IoInitializeIrp).
pub fn initialize_irp(k: &mut Kernel, irp: u64, size: u16, stack_size: u8) -> KResult<()> {
    let l = k.layout;
    k.m.mem.fill(irp, 0, size as u64)?;
    k.m.mem.write_u16(irp + l.irp_type, IO_TYPE_IRP)?;
    k.m.mem.write_u16(irp + l.irp_size_field, size)?;
    k.m.mem.write_u8(irp + l.irp_stack_count, stack_size)?;
    k.m.mem
        .write_u8(irp + l.irp_current_location, stack_size.wrapping_add(1))?;
    let past_end = irp + l.irp_size + stack_size as u64 * l.io_stack_location_size;
    k.write_ptr(irp + l.irp_current_stack_location, past_end)?;
    let thread = k.ps.thread;
    k.write_ptr(irp + l.irp_thread, thread)
}

fn new_irp(k: &mut Kernel, stack_size: u8, origin: IrpOrigin) -> KResult<u64> {
    let size = irp_size(k, stack_size);
    let irp = ex::allocate(k, size, IO_TAG, IO_OWNER.into())?;
    initialize_irp(k, irp, size as u16, stack_size)?;
    k.io.next_irp_id += 1;
    let id = k.io.next_irp_id;
    let owner = match origin {
        IrpOrigin::Host => None,
        _ => Some((k.caller_image(), k.call_site().map(|s| s.address))),
    };
    k.io.irps.insert(
        irp,
        IrpRecord {
            id,
            origin,
            completed: false,
            status: 0,
            information: 0,
            owner,
            last_completion: None,
            marked_pending: Vec::new(),
        },
    );
    Ok(irp)
}

/// IoAllocateIrp(StackSize, ChargeQuota).
pub fn allocate_irp(k: &mut Kernel, stack_size: u8, _charge_quota: bool) -> KResult<u64> {
    new_irp(k, stack_size, IrpOrigin::Allocated)
}

/// IoFreeIrp(Irp).
pub fn free_irp(k: &mut Kernel, irp: u64) -> KResult<()> {
    if k.io.irps.remove(&irp).is_none() {
        return Err(KernelError::bug_check(
            0xC4,
            format!("IoFreeIrp of {irp:#x}, which is not a live IRP"),
        ));
    }
    ex::free(k, irp, None)
}

/// IoReuseIrp(Irp, Status).
pub fn reuse_irp(k: &mut Kernel, irp: u64, status: NtStatus) -> KResult<()> {
    let l = k.layout;
    let size = k.m.mem.read_u16(irp + l.irp_size_field)?;
    let stack = k.m.mem.read_u8(irp + l.irp_stack_count)?;
    initialize_irp(k, irp, size, stack)?;
    k.m.mem.write_u32(irp + l.irp_io_status_status, status)?;
    if let Some(rec) = k.io.irps.get_mut(&irp) {
        rec.completed = false;
        rec.last_completion = None;
        rec.marked_pending.clear();
    }
    Ok(())
}

/// The current stack location of an IRP.
pub fn current_stack_location(k: &Kernel, irp: u64) -> KResult<u64> {
    k.read_ptr(irp + k.layout.irp_current_stack_location)
}

/// The stack location the next IoCallDriver will use (IoGetNextIrpStackLocation).
pub fn next_stack_location(k: &Kernel, irp: u64) -> KResult<u64> {
    Ok(current_stack_location(k, irp)? - k.layout.io_stack_location_size)
}

fn irp_id(k: &Kernel, irp: u64) -> u32 {
    k.io.irps.get(&irp).map(|r| r.id).unwrap_or(0)
}

/// IofCallDriver(DeviceObject, Irp): moves to the next stack location and calls the dispatch routine.
pub fn call_driver(k: &mut Kernel, dev: u64, irp: u64) -> KResult<NtStatus> {
    let l = k.layout;
    let location = k.m.mem.read_u8(irp + l.irp_current_location)? as i8;
    if location <= 1 {
        return Err(KernelError::bug_check(
            0x35,
            format!(
                "IoCallDriver to {} with no stack location left",
                device_driver_name(k, dev)
            ),
        ));
    }
    k.m.mem
        .write_u8(irp + l.irp_current_location, (location - 1) as u8)?;
    let sl = next_stack_location(k, irp)?;
    k.write_ptr(irp + l.irp_current_stack_location, sl)?;
    k.write_ptr(sl + l.isl_device_object, dev)?;
    let driver = k.read_ptr(dev + l.device_object_driver_object)?;
    let major = k.m.mem.read_u8(sl + l.isl_major_function)?;
    let minor = k.m.mem.read_u8(sl + l.isl_minor_function)?;
    let ioctl = if major == major::DEVICE_CONTROL || major == major::INTERNAL_DEVICE_CONTROL {
        Some(k.m.mem.read_u32(sl + l.isl_ioctl_io_control_code)?)
    } else {
        None
    };
    let routine =
        k.read_ptr(driver + l.driver_object_major_function + major as u64 * k.ptr_size())?;
    let id = irp_id(k, irp);
    let name = device_driver_name(k, dev);
    k.io.trace.push(IrpEvent::Dispatch {
        irp: id,
        driver: name.clone(),
        major,
        minor,
        ioctl,
    });
    let irql = ke::current_irql(k);
    let status = k.call_guest(routine, &[dev, irp])? as u32;
    if k.verifier.enabled() {
        check_dispatch_return(k, routine, dev, irp, sl, irql, status)?;
    }
    k.io.trace.push(IrpEvent::Returned {
        irp: id,
        driver: name,
        status,
    });
    Ok(status)
}

/// The verifier's checks after the dispatch routine `routine` returned `status` for `irp`, whose
/// stack location it was given is `sl`, having been called at `irql`: the IRQL must be the same
/// (0xC9 / 0x05), and STATUS_PENDING must come with IoMarkIrpPending (non-fatal, I/O error 0x23D).
fn check_dispatch_return(
    k: &mut Kernel,
    routine: u64,
    dev: u64,
    irp: u64,
    sl: u64,
    irql: u8,
    status: NtStatus,
) -> KResult<()> {
    let now = ke::current_irql(k);
    let site = k.site(routine);
    if now != irql {
        let detail = format!(
            "dispatch routine {site} returned at {} but was called at {}",
            verifier::irql_name(now),
            verifier::irql_name(irql)
        );
        let check = StopCode::new(0xC9, [0x05, dev, u64::from(irql), u64::from(now)]);
        return Err(verifier::stop_at(
            k,
            Rule::IrqlNotRestored,
            check,
            Some(site),
            detail,
        ));
    }
    if status != status::STATUS_PENDING {
        return Ok(());
    }
    let Some(rec) = k.io.irps.get(&irp) else {
        return Ok(());
    };
    let (id, seen) = (rec.id, rec.marked_pending.contains(&sl));
    let marked = seen || k.m.mem.read_u8(sl + k.layout.isl_control)? & SL_PENDING_RETURNED != 0;
    if !marked {
        let driver = site
            .module
            .as_ref()
            .map(|(m, _)| m.clone())
            .unwrap_or_else(|| device_driver_name(k, dev));
        let detail = format!(
            "dispatch routine {site} returned STATUS_PENDING for irp#{id} without IoMarkIrpPending"
        );
        let check = StopCode::new(0xC9, [0x23D, routine, irp, dev]);
        verifier::note(
            k,
            Rule::IrpPendingNotMarked,
            &driver,
            Some(site),
            Some(check),
            detail,
        );
    }
    Ok(())
}

/// IofCompleteRequest(Irp, PriorityBoost), called by a driver.
pub fn complete_request_from_guest(k: &mut Kernel, irp: u64, _boost: u8) -> KResult<()> {
    let by = k.caller_image();
    complete_request(k, irp, by)
}

/// Completes an IRP: walks the stack upwards calling completion routines (stopping at
/// STATUS_MORE_PROCESSING_REQUIRED), propagates pending, then finishes the IRP for its originator.
pub fn complete_request(k: &mut Kernel, irp: u64, by: String) -> KResult<()> {
    let l = k.layout;
    let (id, already, last) = match k.io.irps.get(&irp) {
        Some(r) => (r.id, r.completed, r.last_completion.clone()),
        None => (0, false, None),
    };
    let count = k.m.mem.read_u8(irp + l.irp_stack_count)? as i8;
    let mut location = k.m.mem.read_u8(irp + l.irp_current_location)? as i8;
    if already || location > count + 1 {
        let first = match last {
            Some((who, Some(site))) => format!(" (completed before by {who} at {})", k.site(site)),
            Some((who, None)) => format!(" (completed before by {who})"),
            None => String::new(),
        };
        return Err(verifier::stop(
            k,
            Rule::IrpDoubleCompletion,
            StopCode::new(0x44, [irp, u64::from(id), 0, 0]),
            format!("IoCompleteRequest of irp#{id} by {by}, which was already completed{first}"),
        ));
    }
    let site = k.call_site().map(|s| s.address);
    if let Some(rec) = k.io.irps.get_mut(&irp) {
        rec.last_completion = Some((by.clone(), site));
    }
    let status = k.m.mem.read_u32(irp + l.irp_io_status_status)?;
    let information = k.read_ptr(irp + l.irp_io_status_information)?;
    k.io.trace.push(IrpEvent::Complete {
        irp: id,
        by,
        status,
        information,
    });
    if status == status::STATUS_PENDING {
        return Err(KernelError::bug_check(
            0xC9,
            format!("irp#{id} completed with STATUS_PENDING"),
        ));
    }
    let mut sl = current_stack_location(k, irp)?;
    while location <= count {
        let control = k.m.mem.read_u8(sl + l.isl_control)?;
        let pending = control & SL_PENDING_RETURNED != 0;
        if pending {
            if let Some(rec) = k.io.irps.get_mut(&irp) {
                rec.marked_pending.push(sl);
            }
        }
        k.m.mem
            .write_u8(irp + l.irp_pending_returned, pending as u8)?;
        let routine = k.read_ptr(sl + l.isl_completion_routine)?;
        let context = k.read_ptr(sl + l.isl_context)?;
        // Clear the finished location, then move up.
        k.m.mem.write_u8(sl + l.isl_control, 0)?;
        k.write_ptr(sl + l.isl_completion_routine, 0)?;
        k.write_ptr(sl + l.isl_context, 0)?;
        location += 1;
        sl += l.io_stack_location_size;
        k.m.mem
            .write_u8(irp + l.irp_current_location, location as u8)?;
        k.write_ptr(irp + l.irp_current_stack_location, sl)?;
        let status = k.m.mem.read_u32(irp + l.irp_io_status_status)?;
        let cancel = k.m.mem.read_u8(irp + l.irp_cancel)? != 0;
        let invoke = routine != 0
            && ((status::nt_success(status) && control & SL_INVOKE_ON_SUCCESS != 0)
                || (!status::nt_success(status) && control & SL_INVOKE_ON_ERROR != 0)
                || (cancel && control & SL_INVOKE_ON_CANCEL != 0));
        if invoke {
            let dev = if location > count {
                0
            } else {
                k.read_ptr(sl + l.isl_device_object)?
            };
            let result = k.call_guest(routine, &[dev, irp, context])? as u32;
            let driver = k
                .image_at(routine)
                .map(|i| i.name.clone())
                .unwrap_or_else(|| "host".into());
            k.io.trace.push(IrpEvent::CompletionRoutine {
                irp: id,
                driver,
                result,
            });
            if result == status::STATUS_MORE_PROCESSING_REQUIRED {
                return Ok(());
            }
        } else if pending && location <= count {
            let c = k.m.mem.read_u8(sl + l.isl_control)?;
            k.m.mem
                .write_u8(sl + l.isl_control, c | SL_PENDING_RETURNED)?;
        }
    }
    finish_irp(k, irp)
}

/// The last stage of completion, once no driver holds the IRP any more.
fn finish_irp(k: &mut Kernel, irp: u64) -> KResult<()> {
    let l = k.layout;
    let status = k.m.mem.read_u32(irp + l.irp_io_status_status)?;
    let information = k.read_ptr(irp + l.irp_io_status_information)?;
    let Some(rec) = k.io.irps.get_mut(&irp) else {
        return Ok(());
    };
    rec.completed = true;
    rec.status = status;
    rec.information = information;
    let id = rec.id;
    let origin = rec.origin.clone();
    k.io.trace.push(IrpEvent::Done {
        irp: id,
        status,
        information,
    });
    if let IrpOrigin::Built {
        user_iosb,
        user_event,
        output,
        output_len,
        buffered,
    } = origin
    {
        let system = k.read_ptr(irp + l.irp_system_buffer)?;
        if buffered && system != 0 {
            if output != 0 && status::nt_success(status) {
                k.m.mem
                    .copy_within(output, system, information.min(output_len))?;
            }
            ex::free(k, system, None)?;
        }
        let mdl = k.read_ptr(irp + l.irp_mdl_address)?;
        if mdl != 0 {
            mm::free_mdl(k, mdl)?;
        }
        if user_iosb != 0 {
            k.m.mem.write_u32(user_iosb, status)?;
            k.write_ptr(user_iosb + l.io_status_block_information, information)?;
        }
        if user_event != 0 {
            ke::set_event(k, user_event, 0, false)?;
        }
        free_irp(k, irp)?;
    }
    Ok(())
}

/// IoBuildDeviceIoControlRequest(IoControlCode, DeviceObject, InputBuffer, InputBufferLength,
/// OutputBuffer, OutputBufferLength, InternalDeviceIoControl, Event, IoStatusBlock).
pub fn build_device_io_control_request(
    k: &mut Kernel,
    code: u32,
    dev: u64,
    input: u64,
    input_len: u32,
    output: u64,
    output_len: u32,
    internal: bool,
    event: u64,
    iosb: u64,
) -> KResult<u64> {
    let l = k.layout;
    let stack_size = k.m.mem.read_u8(dev + l.device_object_stack_size)?;
    let method = code & 3;
    let origin = IrpOrigin::Built {
        user_iosb: iosb,
        user_event: event,
        output,
        output_len: output_len as u64,
        buffered: method == METHOD_BUFFERED,
    };
    let irp = new_irp(k, stack_size, origin)?;
    let sl = next_stack_location(k, irp)?;
    let major = if internal {
        major::INTERNAL_DEVICE_CONTROL
    } else {
        major::DEVICE_CONTROL
    };
    k.m.mem.write_u8(sl + l.isl_major_function, major)?;
    k.m.mem.write_u32(sl + l.isl_ioctl_io_control_code, code)?;
    k.m.mem
        .write_u32(sl + l.isl_ioctl_input_buffer_length, input_len)?;
    k.m.mem
        .write_u32(sl + l.isl_ioctl_output_buffer_length, output_len)?;
    k.m.mem.write_u8(irp + l.irp_requestor_mode, 0)?;
    k.write_ptr(irp + l.irp_user_iosb, iosb)?;
    k.write_ptr(irp + l.irp_user_event, event)?;
    k.write_ptr(irp + l.irp_user_buffer, output)?;
    set_transfer_buffers(
        k,
        irp,
        sl,
        method,
        input,
        input_len as u64,
        output,
        output_len as u64,
    )?;
    Ok(irp)
}

/// Sets up SystemBuffer / MdlAddress / Type3InputBuffer for an IOCTL by its transfer method, with
/// `input`/`output` being caller ("user") buffers in guest memory.
fn set_transfer_buffers(
    k: &mut Kernel,
    irp: u64,
    sl: u64,
    method: u32,
    input: u64,
    input_len: u64,
    output: u64,
    output_len: u64,
) -> KResult<()> {
    let l = k.layout;
    match method {
        METHOD_BUFFERED => {
            let len = input_len.max(output_len);
            if len > 0 {
                let system = ex::allocate(k, len, IO_TAG, IO_OWNER.into())?;
                if input_len > 0 {
                    k.m.mem.copy_within(system, input, input_len)?;
                }
                k.write_ptr(irp + l.irp_system_buffer, system)?;
            }
        }
        METHOD_IN_DIRECT | METHOD_OUT_DIRECT => {
            if input_len > 0 {
                let system = ex::allocate(k, input_len, IO_TAG, IO_OWNER.into())?;
                k.m.mem.copy_within(system, input, input_len)?;
                k.write_ptr(irp + l.irp_system_buffer, system)?;
            }
            if output_len > 0 {
                let mdl = mm::create_mdl_for_buffer(k, output, output_len)?;
                k.write_ptr(irp + l.irp_mdl_address, mdl)?;
            }
        }
        _ => {
            k.write_ptr(sl + l.isl_ioctl_type3_input_buffer, input)?;
        }
    }
    Ok(())
}

/// The I/O manager's default dispatch routine: completes with STATUS_INVALID_DEVICE_REQUEST.
fn invalid_device_request(k: &mut Kernel, _dev: u64, irp: u64) -> KResult<NtStatus> {
    let l = k.layout;
    k.m.mem.write_u32(
        irp + l.irp_io_status_status,
        status::STATUS_INVALID_DEVICE_REQUEST,
    )?;
    k.write_ptr(irp + l.irp_io_status_information, 0)?;
    complete_request(k, irp, "ntoskrnl.exe".into())?;
    Ok(status::STATUS_INVALID_DEVICE_REQUEST)
}

// ---------------------------------------------------------------------------------------------
// Host requests (the Win32-shaped API)

/// A request to send from the host.
#[derive(Debug, Clone, Copy)]
pub struct HostRequest {
    /// Major function.
    pub major: u8,
    /// Minor function.
    pub minor: u8,
    /// File object the request is for, if any.
    pub file_object: u64,
}

/// What became of a host IRP.
#[derive(Debug, Clone, Copy)]
struct HostCompletion {
    status: NtStatus,
    information: u64,
    /// The IRP's SystemBuffer (owned by the caller now), or 0.
    system_buffer: u64,
}

/// Frees an IRP's MDL and the IRP itself; returns its SystemBuffer, which the caller now owns.
fn release_irp(k: &mut Kernel, irp: u64) -> KResult<u64> {
    let l = k.layout;
    let system = k.read_ptr(irp + l.irp_system_buffer)?;
    let mdl = k.read_ptr(irp + l.irp_mdl_address)?;
    if mdl != 0 {
        mm::free_mdl(k, mdl)?;
    }
    free_irp(k, irp)?;
    Ok(system)
}

/// Builds an IRP for a host request to the top of `dev`'s stack, lets `setup` fill it in (it gets
/// the IRP and its first stack location), sends it, and waits for its completion, running deferred
/// work (DPCs, timers, work items; see [`ke::block_until`]). The IRP and its MDL are freed; the
/// SystemBuffer is handed back to the caller.
fn send_host_irp(
    k: &mut Kernel,
    dev: u64,
    req: HostRequest,
    setup: &mut dyn FnMut(&mut Kernel, u64, u64) -> KResult<()>,
) -> KResult<HostCompletion> {
    let l = k.layout;
    let top = get_attached_device(k, dev)?;
    let stack_size = k.m.mem.read_u8(top + l.device_object_stack_size)?;
    let irp = new_irp(k, stack_size, IrpOrigin::Host)?;
    let sl = next_stack_location(k, irp)?;
    k.m.mem.write_u8(sl + l.isl_major_function, req.major)?;
    k.m.mem.write_u8(sl + l.isl_minor_function, req.minor)?;
    k.write_ptr(sl + l.isl_file_object, req.file_object)?;
    k.write_ptr(irp + l.irp_original_file_object, req.file_object)?;
    k.m.mem.write_u8(irp + l.irp_requestor_mode, 1)?;
    // PnP IRPs start out "not supported" so that drivers passing them on unchanged report that.
    let initial = if req.major == major::PNP {
        status::STATUS_NOT_SUPPORTED
    } else {
        0
    };
    k.m.mem.write_u32(irp + l.irp_io_status_status, initial)?;
    let outcome = setup(k, irp, sl)
        .and_then(|()| call_driver(k, top, irp))
        .and_then(|returned| {
            // A pending IRP may be completed by a DPC, a timer's DPC or a work item.
            let id = irp_id(k, irp);
            ke::block_until(
                k,
                None,
                &mut |k| Ok(k.io.irps.get(&irp).is_some_and(|r| r.completed)),
                &|| {
                    format!(
                        "irp#{id} returned {} and was never completed",
                        status::name(returned)
                    )
                },
            )?;
            Ok(())
        });
    let record = k.io.irps.get(&irp).cloned();
    if let (Err(e), Some(r)) = (&outcome, &record) {
        k.io.trace.push(IrpEvent::Aborted {
            irp: r.id,
            reason: e.summary(),
        });
    }
    let system_buffer = release_irp(k, irp)?;
    if let Err(e) = outcome {
        if system_buffer != 0 {
            ex::free(k, system_buffer, None)?;
        }
        return Err(e);
    }
    let record = record.expect("a live IRP has a record");
    Ok(HostCompletion {
        status: record.status,
        information: record.information,
        system_buffer,
    })
}

fn file_for_handle(k: &Kernel, handle: u32) -> KResult<OpenFile> {
    k.io.handles
        .get(&handle)
        .copied()
        .ok_or_else(|| KernelError::Unsupported(format!("invalid handle {handle}")))
}

/// Opens a device by name (`\\.\IcaIoctl`, `\??\X`, `\Device\X`): sends IRP_MJ_CREATE and returns a
/// handle, or the failure status.
pub fn open(k: &mut Kernel, path: &str) -> KResult<Result<u32, NtStatus>> {
    let Some(dev) = k.io.resolve(path) else {
        return Ok(Err(status::STATUS_OBJECT_NAME_NOT_FOUND));
    };
    let l = k.layout;
    let file = ex::allocate(k, l.file_object_size, IO_TAG, IO_OWNER.into())?;
    k.m.mem.write_u16(file + l.file_object_type, IO_TYPE_FILE)?;
    k.m.mem
        .write_u16(file + l.file_object_size_field, l.file_object_size as u16)?;
    k.write_ptr(file + l.file_object_device_object, dev)?;
    let req = HostRequest {
        major: major::CREATE,
        minor: 0,
        file_object: file,
    };
    let done = send_host_irp(k, dev, req, &mut |_, _, _| Ok(()));
    let done = match done {
        Ok(d) if status::nt_success(d.status) => d,
        other => {
            ex::free(k, file, None)?;
            return other.map(|d| Err(d.status));
        }
    };
    debug_assert_eq!(done.system_buffer, 0);
    k.io.next_handle += 4;
    let handle = k.io.next_handle;
    k.io.handles.insert(
        handle,
        OpenFile {
            file_object: file,
            device: dev,
        },
    );
    Ok(Ok(handle))
}

/// Closes a handle: IRP_MJ_CLEANUP then IRP_MJ_CLOSE; returns the CLOSE status.
pub fn close(k: &mut Kernel, handle: u32) -> KResult<NtStatus> {
    let f = file_for_handle(k, handle)?;
    k.io.handles.remove(&handle);
    let mut last = status::STATUS_SUCCESS;
    for major in [major::CLEANUP, major::CLOSE] {
        let req = HostRequest {
            major,
            minor: 0,
            file_object: f.file_object,
        };
        match send_host_irp(k, f.device, req, &mut |_, _, _| Ok(())) {
            Ok(done) => last = done.status,
            Err(e) => {
                ex::free(k, f.file_object, None)?;
                return Err(e);
            }
        }
    }
    ex::free(k, f.file_object, None)?;
    Ok(last)
}

/// A caller buffer in guest memory standing for the user-mode buffer of a request.
struct UserBuffer {
    addr: u64,
    len: u64,
}

impl UserBuffer {
    fn new(k: &mut Kernel, data: &[u8]) -> KResult<UserBuffer> {
        if data.is_empty() {
            return Ok(UserBuffer { addr: 0, len: 0 });
        }
        let addr = k.m.mem.alloc(data.len() as u64, Prot::READ | Prot::WRITE)?;
        k.m.mem.write_bytes(addr, data)?;
        Ok(UserBuffer {
            addr,
            len: data.len() as u64,
        })
    }

    fn release(self, k: &mut Kernel) -> KResult<()> {
        if self.addr != 0 {
            k.m.mem.free(self.addr)?;
        }
        Ok(())
    }
}

/// The transfer method an I/O request uses: from the IOCTL code, or from the device flags for
/// read and write.
fn rw_method(k: &Kernel, dev: u64) -> KResult<u32> {
    let top_flags = k.m.mem.read_u32(dev + k.layout.device_object_flags)?;
    Ok(if top_flags & DO_BUFFERED_IO != 0 {
        METHOD_BUFFERED
    } else if top_flags & DO_DIRECT_IO != 0 {
        METHOD_OUT_DIRECT
    } else {
        3
    })
}

/// Sends one data-carrying request and collects what comes back. `input` is what the driver reads,
/// `output` the caller's output buffer (its initial contents visible to direct and neither I/O).
fn transfer(
    k: &mut Kernel,
    handle: u32,
    req_major: u8,
    method: u32,
    input: &[u8],
    output: &[u8],
    fill: &mut dyn FnMut(&mut Kernel, u64, u64, u64) -> KResult<()>,
) -> KResult<IoResult> {
    let f = file_for_handle(k, handle)?;
    let user_in = UserBuffer::new(k, input)?;
    let user_out = UserBuffer::new(k, output)?;
    let (in_addr, in_len, out_addr, out_len) =
        (user_in.addr, user_in.len, user_out.addr, user_out.len);
    let l = k.layout;
    let req = HostRequest {
        major: req_major,
        minor: 0,
        file_object: f.file_object,
    };
    let result = send_host_irp(k, f.device, req, &mut |k, irp, sl| {
        k.write_ptr(irp + l.irp_user_buffer, out_addr)?;
        fill(k, sl, in_len, out_len)?;
        set_transfer_buffers(k, irp, sl, method, in_addr, in_len, out_addr, out_len)
    });
    let outcome = result.and_then(|done| {
        let keep = done.information.min(out_len) as usize;
        let output = if method == METHOD_BUFFERED {
            if done.system_buffer != 0
                && (status::nt_success(done.status)
                    || done.status == status::STATUS_BUFFER_OVERFLOW)
            {
                k.m.mem.read_vec(done.system_buffer, keep)?
            } else {
                Vec::new()
            }
        } else if out_addr != 0 {
            k.m.mem.read_vec(out_addr, out_len as usize)?
        } else {
            Vec::new()
        };
        if done.system_buffer != 0 {
            ex::free(k, done.system_buffer, None)?;
        }
        Ok(IoResult {
            status: done.status,
            information: done.information,
            output,
        })
    });
    user_in.release(k)?;
    user_out.release(k)?;
    outcome
}

/// DeviceIoControl: IRP_MJ_DEVICE_CONTROL with `input` and an output buffer of `output.len()` bytes
/// (whose initial contents the driver sees for METHOD_IN_DIRECT and METHOD_NEITHER).
pub fn device_io_control(
    k: &mut Kernel,
    handle: u32,
    code: u32,
    input: &[u8],
    output: &[u8],
) -> KResult<IoResult> {
    let l = k.layout;
    transfer(
        k,
        handle,
        major::DEVICE_CONTROL,
        code & 3,
        input,
        output,
        &mut |k, sl, in_len, out_len| {
            k.m.mem.write_u32(sl + l.isl_ioctl_io_control_code, code)?;
            k.m.mem
                .write_u32(sl + l.isl_ioctl_input_buffer_length, in_len as u32)?;
            k.m.mem
                .write_u32(sl + l.isl_ioctl_output_buffer_length, out_len as u32)?;
            Ok(())
        },
    )
}

/// ReadFile: IRP_MJ_READ for up to `len` bytes.
pub fn read(k: &mut Kernel, handle: u32, len: usize) -> KResult<IoResult> {
    let dev = get_attached_device(k, file_for_handle(k, handle)?.device)?;
    let method = rw_method(k, dev)?;
    let l = k.layout;
    let mut result = transfer(
        k,
        handle,
        major::READ,
        method,
        &[],
        &vec![0; len],
        &mut |k, sl, _, out_len| {
            k.m.mem.write_u32(sl + l.isl_read_length, out_len as u32)?;
            Ok(())
        },
    )?;
    result.output.truncate(result.information as usize);
    Ok(result)
}

/// WriteFile: IRP_MJ_WRITE of `data`.
pub fn write(k: &mut Kernel, handle: u32, data: &[u8]) -> KResult<IoResult> {
    let dev = get_attached_device(k, file_for_handle(k, handle)?.device)?;
    let method = rw_method(k, dev)?;
    let l = k.layout;
    // A write's data is the caller's buffer: buffered I/O copies it in, direct I/O maps it (the MDL
    // describes the "output" buffer slot), neither I/O passes the pointer.
    let (input, output): (&[u8], &[u8]) = if method == METHOD_BUFFERED {
        (data, &[])
    } else {
        (&[], data)
    };
    let mut result = transfer(
        k,
        handle,
        major::WRITE,
        method,
        input,
        output,
        &mut |k, sl, in_len, out_len| {
            k.m.mem
                .write_u32(sl + l.isl_read_length, in_len.max(out_len) as u32)?;
            Ok(())
        },
    )?;
    result.output.clear();
    Ok(result)
}

/// Sends a PnP IRP with `minor` to the top of `dev`'s stack; `setup` may fill in parameters.
pub fn send_pnp(
    k: &mut Kernel,
    dev: u64,
    minor: u8,
    setup: &mut dyn FnMut(&mut Kernel, u64, u64) -> KResult<()>,
) -> KResult<(NtStatus, u64)> {
    let req = HostRequest {
        major: major::PNP,
        minor,
        file_object: 0,
    };
    let done = send_host_irp(k, dev, req, setup)?;
    if done.system_buffer != 0 {
        ex::free(k, done.system_buffer, None)?;
    }
    Ok((done.status, done.information))
}

// ---------------------------------------------------------------------------------------------
// Cancellation

/// The system-wide cancel spin lock: a KSPIN_LOCK in guest memory of its own (not pool, so it is no
/// allocation a driver could be blamed for), so the spin-lock rules apply to it.
#[derive(Debug, Default)]
struct CancelSpinLock(Option<u64>);

fn cancel_spin_lock(k: &mut Kernel) -> KResult<u64> {
    if let Some(lock) = k.extension::<CancelSpinLock>().0 {
        return Ok(lock);
    }
    let lock = k.m.mem.alloc(0x1000, Prot::READ | Prot::WRITE)?;
    k.extension::<CancelSpinLock>().0 = Some(lock);
    Ok(lock)
}

/// IoAcquireCancelSpinLock(Irql): takes the cancel spin lock, raising to DISPATCH_LEVEL; the old
/// IRQL goes to `*Irql`.
pub fn acquire_cancel_spin_lock(k: &mut Kernel, irql: u64) -> KResult<()> {
    let lock = cancel_spin_lock(k)?;
    let old = ke::acquire_spin_lock(k, lock)?;
    Ok(k.m.mem.write_u8(irql, old)?)
}

/// IoReleaseCancelSpinLock(Irql): releases the cancel spin lock, back to `Irql`.
pub fn release_cancel_spin_lock(k: &mut Kernel, irql: u8) -> KResult<()> {
    let lock = cancel_spin_lock(k)?;
    ke::release_spin_lock(k, lock, irql)
}

/// IoCancelIrp(Irp) -> whether the IRP had a cancel routine. Sets Irp->Cancel and, under the
/// cancel spin lock, takes the CancelRoutine out of the IRP; a routine is called at DISPATCH_LEVEL
/// with the lock held (Irp->CancelIrql the IRQL to give IoReleaseCancelSpinLock) and the device
/// object of the IRP's current stack location; without one the lock is released here.
pub fn cancel_irp(k: &mut Kernel, irp: u64) -> KResult<bool> {
    let l = k.layout;
    let lock = cancel_spin_lock(k)?;
    let old = ke::acquire_spin_lock(k, lock)?;
    k.m.mem.write_u8(irp + l.irp_cancel, 1)?;
    let routine = k.read_ptr(irp + l.irp_cancel_routine)?;
    if routine == 0 {
        ke::release_spin_lock(k, lock, old)?;
        return Ok(false);
    }
    k.write_ptr(irp + l.irp_cancel_routine, 0)?;
    k.m.mem.write_u8(irp + l.irp_cancel_irql, old)?;
    let device = k.read_ptr(current_stack_location(k, irp)? + l.isl_device_object)?;
    k.call_guest(routine, &[device, irp])?;
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Driver object extensions

/// Pool tag of driver object extensions (they live as long as the driver object).
pub const DRIVER_EXTENSION_TAG: u32 = u32::from_le_bytes(*b"IoDe");

/// Driver object extensions: (DRIVER_OBJECT, ClientIdentificationAddress) -> the pool block.
#[derive(Debug, Default)]
struct DriverObjectExtensions(HashMap<(u64, u64), u64>);

/// IoAllocateDriverObjectExtension(DriverObject, ClientIdentificationAddress,
/// DriverObjectExtensionSize, DriverObjectExtension): zeroed non-paged pool, found again by
/// IoGetDriverObjectExtension with the same client address and freed with the driver object.
/// A second extension with the same client address is STATUS_OBJECT_NAME_COLLISION (and NULL).
pub fn allocate_driver_object_extension(
    k: &mut Kernel,
    driver: u64,
    client: u64,
    size: u32,
    out: u64,
) -> KResult<NtStatus> {
    if k.extension::<DriverObjectExtensions>()
        .0
        .contains_key(&(driver, client))
    {
        k.write_ptr(out, 0)?;
        return Ok(status::STATUS_OBJECT_NAME_COLLISION);
    }
    let block = ex::allocate(k, u64::from(size), DRIVER_EXTENSION_TAG, IO_OWNER.into())?;
    k.extension::<DriverObjectExtensions>()
        .0
        .insert((driver, client), block);
    k.write_ptr(out, block)?;
    Ok(status::STATUS_SUCCESS)
}

/// IoGetDriverObjectExtension(DriverObject, ClientIdentificationAddress) -> the extension, or NULL.
pub fn get_driver_object_extension(k: &mut Kernel, driver: u64, client: u64) -> KResult<u64> {
    Ok(k.extension::<DriverObjectExtensions>()
        .0
        .get(&(driver, client))
        .copied()
        .unwrap_or(0))
}

/// Frees the extensions of a driver object being deleted.
fn free_driver_object_extensions(k: &mut Kernel, driver: u64) -> KResult<()> {
    let map = &mut k.extension::<DriverObjectExtensions>().0;
    let mut blocks: Vec<u64> = map
        .iter()
        .filter(|((d, _), _)| *d == driver)
        .map(|(_, &b)| b)
        .collect();
    map.retain(|(d, _), _| *d != driver);
    blocks.sort_unstable();
    for block in blocks {
        ex::free(k, block, None)?;
    }
    Ok(())
}

/// Unload check (the verifier is on): IRPs the driver image allocated or built and never freed.
pub(crate) fn check_unload(k: &mut Kernel, image: &str) {
    let mut leaked: Vec<(u32, Option<u64>)> =
        k.io.irps
            .values()
            .filter_map(|r| match &r.owner {
                Some((owner, site)) if owner == image => Some((r.id, *site)),
                _ => None,
            })
            .collect();
    leaked.sort_unstable();
    for (id, site) in leaked {
        let site = site.map(|s| k.site(s));
        let at = site
            .as_ref()
            .map(|s| format!(" at {s}"))
            .unwrap_or_default();
        let detail = format!("irp#{id}, allocated{at}, was never freed (IoFreeIrp)");
        verifier::note(k, Rule::IrpLeak, image, site, None, detail);
    }
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall IoCreateDevice => create_device(driver_object: u64, device_extension_size: u32, device_name: u64, device_type: u32, device_characteristics: u32, exclusive: bool, device_object: u64) @ irql::IO_PASSIVE1;
    stdcall IoDeleteDevice => delete_device(device_object: u64) @ irql::IO_APC_LTE;
    stdcall IoCreateSymbolicLink => create_symbolic_link(symbolic_link_name: u64, device_name: u64) @ irql::IO_PASSIVE4;
    stdcall IoDeleteSymbolicLink => delete_symbolic_link(symbolic_link_name: u64) @ irql::IO_PASSIVE4;
    stdcall IoAttachDeviceToDeviceStack => attach_device_to_device_stack(source_device: u64, target_device: u64) @ irql::DISPATCH;
    stdcall IoDetachDevice => detach_device(target_device: u64) @ irql::IO_PASSIVE3;
    stdcall IoGetAttachedDevice => get_attached_device(device_object: u64);
    stdcall IoGetAttachedDeviceReference => get_attached_device_reference(device_object: u64) @ irql::DISPATCH;
    stdcall IoIsWdmVersionAvailable => is_wdm_version_available(major_version: u8, minor_version: u8) @ irql::IO_PASSIVE5;
    stdcall IoAllocateIrp => allocate_irp(stack_size: u8, charge_quota: bool) @ irql::DISPATCH;
    stdcall IoFreeIrp => free_irp(irp: u64) @ irql::DISPATCH;
    stdcall IoInitializeIrp => initialize_irp(irp: u64, packet_size: u16, stack_size: u8);
    stdcall IoReuseIrp => reuse_irp(irp: u64, status: u32);
    stdcall IoBuildDeviceIoControlRequest => build_device_io_control_request(io_control_code: u32, device_object: u64, input_buffer: u64, input_buffer_length: u32, output_buffer: u64, output_buffer_length: u32, internal_device_io_control: bool, event: u64, io_status_block: u64) @ irql::IO_PASSIVE1_APC;
    fastcall IofCallDriver => call_driver(device_object: u64, irp: u64) @ irql::CALL_DRIVER;
    stdcall IoCallDriver => call_driver(device_object: u64, irp: u64) @ irql::CALL_DRIVER;
    fastcall IofCompleteRequest => complete_request_from_guest(irp: u64, priority_boost: u8) @ irql::COMPLETE_REQUEST;
    stdcall IoCompleteRequest => complete_request_from_guest(irp: u64, priority_boost: u8) @ irql::COMPLETE_REQUEST;
    stdcall IoAcquireCancelSpinLock => acquire_cancel_spin_lock(irql: u64) @ irql::DISPATCH;
    stdcall IoReleaseCancelSpinLock => release_cancel_spin_lock(irql: u8) @ irql::DISPATCH;
    stdcall IoCancelIrp => cancel_irp(irp: u64) @ irql::DISPATCH;
    stdcall IoAllocateDriverObjectExtension => allocate_driver_object_extension(driver_object: u64, client_identification_address: u64, driver_object_extension_size: u32, driver_object_extension: u64) @ irql::DISPATCH;
    stdcall IoGetDriverObjectExtension => get_driver_object_extension(driver_object: u64, client_identification_address: u64) @ irql::DISPATCH;
];
