//! Starting what an install wrote, the way Windows' PnP manager and service control manager do:
//! drivers are found through their service keys (ImagePath -> the installed .sys), a device's
//! stack is its LowerFilters, Service and UpperFilters from its `Enum` key; then everything is
//! torn down again (remove the stack, DriverUnload) before the process exits. The manager reads
//! the stack ([`device_stack`], [`services_stack`]); [`start_stack`] starts it, in this process
//! or in a driver host of its own ([`isolated_stack_params`]).

use host_linux::device::PciDevice as PciFunction;
use host_linux::pci::PciDevice;
use host_linux::vfio::{bind_instructions, VfioPciDevice, VFIO_DRIVER};
use ntoskrnl::pnp::{self, Driver};
use ntoskrnl::status::{self, NtStatus};

use crate::host::DriverFile;
use crate::inf::Arch;
use crate::isolate::{Backend, HostRegistry, ServiceImage, Stack, StartParams};
use crate::net::NetAdapter;
use crate::registry::windows::{driver_key, enum_key, service_key};
use crate::registry::RegistryStore;
use crate::DriverHost;

use super::{InstallError, Root};

/// A driver host with the installed drivers running.
pub struct Running {
    pub host: DriverHost,
    /// Loaded drivers in load order, with their image file names.
    pub drivers: Vec<(Driver, String)>,
    /// The device's PDO (device installs).
    pub pdo: Option<u64>,
    pub instance: Option<String>,
}

/// The software device model behind a PCI instance ID (`rtl8139`), None for real hardware.
pub fn model_for_instance(instance: &str) -> Option<String> {
    host_linux::models::catalog()
        .into_iter()
        .find(|m| crate::install::devices::pci_instance_id(m).eq_ignore_ascii_case(instance))
        .and_then(|m| host_linux::models::model_name(&m).map(str::to_string))
}

/// The host's PCI function behind a PCI instance ID, among `pci` (normally the sysfs scan).
pub fn pci_function_for_instance<'a>(
    instance: &str,
    pci: &'a [PciDevice],
) -> Option<&'a PciDevice> {
    pci.iter()
        .find(|d| crate::install::devices::pci_instance_id(d).eq_ignore_ascii_case(instance))
}

/// Why a device cannot be started yet (None: it can), with the host's PCI functions from sysfs.
pub fn cannot_start(instance: &str) -> Option<String> {
    cannot_start_on(instance, &host_linux::pci::scan())
}

/// [`cannot_start`] with the host's PCI functions `pci`: a software model starts; real PCI
/// hardware starts through VFIO when the function is bound to vfio-pci and is a network
/// controller (its NDIS miniport runs on it).
pub fn cannot_start_on(instance: &str, pci: &[PciDevice]) -> Option<String> {
    if instance.len() >= 4 && instance[..4].eq_ignore_ascii_case("PCI\\") {
        if model_for_instance(instance).is_some() {
            return None;
        }
        let Some(d) = pci_function_for_instance(instance, pci) else {
            return Some("this PCI function is not present on this machine".into());
        };
        if d.driver.as_deref() != Some(VFIO_DRIVER) {
            return Some(format!(
                "real PCI hardware is driven through VFIO, and {} is not bound to vfio-pci ({}); \
                 bind it with: {}",
                d.address,
                d.driver
                    .as_deref()
                    .map_or("no driver".to_string(), |l| format!("driver: {l}")),
                bind_instructions(&d.address, d.driver.as_deref())
            ));
        }
        if d.base_class() != 0x02 {
            return Some(
                "only network controllers (NDIS miniports) start on real PCI hardware so far"
                    .into(),
            );
        }
        None
    } else if !is_root_device(instance) {
        Some("only root-enumerated devices can be started".into())
    } else {
        None
    }
}

/// What an installed network adapter runs on.
pub enum NicBackend {
    /// Its software device model, plugged into the host's PCI bus with its wire on `wire`; `wake`
    /// lists fds whose readability means the wire has input.
    Model {
        wire: Box<dyn host_linux::packet::PacketPort + Send>,
        wake: Vec<std::os::fd::RawFd>,
    },
    /// The real PCI function at `address` (bound to vfio-pci), through VFIO.
    Vfio { address: String },
    /// No hardware: a virtual (root-enumerated) miniport.
    Virtual,
}

/// The real PCI function (bound to vfio-pci) an installed network adapter runs on, by address;
/// None for a software model or a function that cannot start ([`cannot_start`] says why).
pub fn vfio_function_for_instance(instance: &str) -> Option<String> {
    if model_for_instance(instance).is_some() {
        return None;
    }
    let pci = host_linux::pci::scan();
    let d = pci_function_for_instance(instance, &pci)?;
    (cannot_start_on(instance, &pci).is_none()).then(|| d.address.clone())
}

fn dbt_arch(a: Arch) -> dbt::Arch {
    match a {
        Arch::X86 => dbt::Arch::X86,
        _ => dbt::Arch::X64,
    }
}

fn other(e: impl std::fmt::Display) -> InstallError {
    InstallError::Other(e.to_string())
}

fn fails(what: &str, s: NtStatus) -> InstallError {
    InstallError::Other(format!("{what} failed with {}", status::name(s)))
}

/// How the driver host that runs an install's drivers is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSetup {
    /// The drivers' architecture.
    pub arch: Arch,
    /// Whether the verifier checks them.
    pub verifier: bool,
}

fn new_host(store: &RegistryStore, setup: HostSetup) -> Result<DriverHost, InstallError> {
    Ok(DriverHost::new(dbt_arch(setup.arch))
        .map_err(other)?
        .with_verifier(setup.verifier)
        .with_registry(store))
}

/// The installed file of service `name` (its ImagePath), read.
fn service_image(
    root: &Root,
    store: &RegistryStore,
    name: &str,
) -> Result<ServiceImage, InstallError> {
    let key = service_key(name);
    if !store.key_exists(&key)? {
        return Err(other(format!(
            "service {name} is not installed (no Services\\{name} key)"
        )));
    }
    let image_path = store
        .value(&key, "ImagePath")?
        .and_then(|v| v.as_str())
        .ok_or_else(|| other(format!("service {name} has no ImagePath")))?;
    let file = root.image_path_to_host(&image_path).ok_or_else(|| {
        other(format!(
            "service {name}: ImagePath {image_path} is not a path ICA can place"
        ))
    })?;
    Ok(ServiceImage {
        service: name.to_string(),
        file: DriverFile::read(&file).map_err(other)?,
    })
}

/// Maps a driver and runs its DriverEntry (a service loaded already is not loaded again).
fn load_service(
    run: &mut Running,
    image: &ServiceImage,
    say: &mut dyn FnMut(String),
) -> Result<Driver, InstallError> {
    if let Some((d, _)) = run
        .drivers
        .iter()
        .find(|(d, _)| d.service.eq_ignore_ascii_case(&image.service))
    {
        return Ok(d.clone());
    }
    let name = &image.service;
    let mapped = run.host.map_file(&image.file).map_err(other)?;
    let (driver, st) = pnp::initialize_driver(&mut run.host.k, &mapped, name)
        .map_err(|e| other(run.host.fail(e)))?;
    if !status::nt_success(st) {
        return Err(fails(&format!("{name}: DriverEntry"), st));
    }
    say(format!(
        "{name}: {} loaded, DriverEntry returned {}",
        image.file.name,
        status::name(st)
    ));
    run.drivers.push((driver.clone(), mapped.name.clone()));
    Ok(driver)
}

/// Named devices and symbolic links the drivers created, one line each.
pub fn objects(host: &DriverHost) -> Vec<String> {
    let mut devices: Vec<_> = host
        .k
        .io
        .devices
        .values()
        .filter_map(|d| d.name.clone().map(|n| (n, d.driver)))
        .collect();
    devices.sort();
    let mut out = Vec::new();
    for (name, driver) in devices {
        let owner = host
            .k
            .io
            .driver(driver)
            .map(|d| d.image.clone())
            .unwrap_or_default();
        if owner == pnp::PNP_MANAGER {
            continue;
        }
        out.push(format!("device {name} ({owner})"));
    }
    for (link, target) in host.k.io.symbolic_links() {
        out.push(format!("symbolic link {link} -> {target}"));
    }
    out
}

/// The stack of an installed root device, from its `Enum` key: its lower filters, function
/// driver and upper filters (bottom to top) with their installed files.
pub fn device_stack(
    root: &Root,
    store: &RegistryStore,
    instance: &str,
) -> Result<Stack, InstallError> {
    if let Some(why) = cannot_start(instance) {
        return Err(other(format!("{instance}: not started: {why}")));
    }
    let ekey = enum_key(instance);
    let multi = |n: &str| -> Result<Vec<String>, InstallError> {
        Ok(store
            .value(&ekey, n)?
            .and_then(|v| v.as_multi_sz())
            .unwrap_or_default())
    };
    let mut names = multi("LowerFilters")?;
    names.extend(store.value(&ekey, "Service")?.and_then(|v| v.as_str()));
    names.extend(multi("UpperFilters")?);
    let drivers = names
        .iter()
        .map(|n| service_image(root, store, n))
        .collect::<Result<_, _>>()?;
    Ok(Stack::Device {
        instance: instance.to_string(),
        drivers,
    })
}

/// The stack of installed legacy (non-PnP) services: their installed files.
pub fn services_stack(
    root: &Root,
    store: &RegistryStore,
    services: &[String],
) -> Result<Stack, InstallError> {
    Ok(Stack::Services(
        services
            .iter()
            .map(|n| service_image(root, store, n))
            .collect::<Result<_, _>>()?,
    ))
}

/// Starts `stack` in `host`, the way Windows' PnP manager and service control manager do: a
/// device's drivers are loaded (DriverEntry, each once), its PDO created, AddDevice runs bottom to
/// top, then IRP_MN_START_DEVICE; services get DriverEntry; `run` gets DriverEntry and, if the
/// driver has AddDevice, a root-enumerated stack built and removed again. Network adapters
/// start through [`NetAdapter`] instead. `say` hears each step and the devices and links made.
pub fn start_stack(
    host: DriverHost,
    stack: &Stack,
    say: &mut dyn FnMut(String),
) -> Result<Running, InstallError> {
    let mut run = Running {
        host,
        drivers: Vec::new(),
        pdo: None,
        instance: None,
    };
    match stack {
        Stack::Device { instance, drivers } => {
            let mut stack = Vec::new();
            for image in drivers {
                stack.push(load_service(&mut run, image, say)?);
            }
            let device_id = instance.split('\\').nth(1).unwrap_or(instance).to_string();
            let pdo = pnp::create_root_device(&mut run.host.k, &device_id)
                .map_err(|e| other(run.host.fail(e)))?;
            ntoskrnl::registry::set_device_instance(&mut run.host.k, pdo, instance);
            run.pdo = Some(pdo);
            run.instance = Some(instance.clone());
            say(format!("PDO for {instance} created"));
            for d in &stack {
                let st = pnp::add_device(&mut run.host.k, d, pdo)
                    .map_err(|e| other(run.host.fail(e)))?;
                if !status::nt_success(st) {
                    return Err(fails(&format!("{}: AddDevice", d.service), st));
                }
                say(format!(
                    "{}: AddDevice returned {}",
                    d.service,
                    status::name(st)
                ));
            }
            let st =
                pnp::start_device(&mut run.host.k, pdo).map_err(|e| other(run.host.fail(e)))?;
            if !status::nt_success(st) {
                return Err(fails("IRP_MN_START_DEVICE", st));
            }
            say(format!("IRP_MN_START_DEVICE: {}", status::name(st)));
        }
        Stack::Services(drivers) => {
            for image in drivers {
                load_service(&mut run, image, say)?;
            }
        }
        Stack::Run(file) => {
            let driver = run.host.load_driver_file(file).map_err(other)?;
            say(format!(
                "{}: DriverEntry returned STATUS_SUCCESS ({} driver)",
                file.name,
                run.host.k.arch().name()
            ));
            run.drivers.push((driver.clone(), file.name.clone()));
            if has_add_device(&run.host, &driver) {
                objects(&run.host).into_iter().for_each(&mut *say);
                let pdo = run
                    .host
                    .build_stack(&driver.service, &[&driver])
                    .map_err(other)?;
                say(
                    "PnP: AddDevice and IRP_MN_START_DEVICE succeeded on a root-enumerated device"
                        .into(),
                );
                objects(&run.host).into_iter().for_each(&mut *say);
                let query = run.host.remove_stack(pdo).map_err(other)?;
                say(format!(
                    "PnP: device removed (IRP_MN_QUERY_REMOVE_DEVICE: {})",
                    status::name(query)
                ));
                return Ok(run);
            }
        }
        Stack::Nic { driver, .. } => {
            return Err(other(format!(
                "{}: a network adapter starts through NDIS",
                driver.name
            )))
        }
    }
    objects(&run.host).into_iter().for_each(&mut *say);
    Ok(run)
}

/// Whether a loaded driver has an AddDevice routine (a PnP driver).
fn has_add_device(host: &DriverHost, driver: &Driver) -> bool {
    let l = host.k.layout;
    let ext = host
        .k
        .read_ptr(driver.object + l.driver_object_driver_extension)
        .unwrap_or(0);
    ext != 0
        && host
            .k
            .read_ptr(ext + l.driver_extension_add_device)
            .unwrap_or(0)
            != 0
}

/// Starts an installed root device in this process (see [`start_stack`]).
pub fn start_device(
    root: &Root,
    store: &RegistryStore,
    setup: HostSetup,
    instance: &str,
    say: &mut dyn FnMut(String),
) -> Result<Running, InstallError> {
    let stack = device_stack(root, store, instance)?;
    start_stack(new_host(store, setup)?, &stack, say)
}

/// Factory MAC address of software NIC models (locally administered).
pub const MODEL_MAC: [u8; 6] = [0x02, 0x1C, 0xA0, 0x00, 0x81, 0x39];

/// Where an installed network adapter's miniport and configuration are.
struct NicPlan {
    service: String,
    /// The installed driver file.
    file: std::path::PathBuf,
    /// The driver key NDIS reads the configuration from.
    config_key: Option<String>,
}

fn nic_plan(root: &Root, store: &RegistryStore, instance: &str) -> Result<NicPlan, InstallError> {
    let ekey = enum_key(instance);
    let service = store
        .value(&ekey, "Service")?
        .and_then(|v| v.as_str())
        .ok_or_else(|| {
            other(format!(
                "{instance}: no function driver (Service) installed"
            ))
        })?;
    let driver = store.value(&ekey, "Driver")?.and_then(|v| v.as_str());
    let image_path = store
        .value(&service_key(&service), "ImagePath")?
        .and_then(|v| v.as_str())
        .ok_or_else(|| other(format!("service {service} has no ImagePath")))?;
    let file = root.image_path_to_host(&image_path).ok_or_else(|| {
        other(format!(
            "service {service}: ImagePath {image_path} is not a path ICA can place"
        ))
    })?;
    Ok(NicPlan {
        service,
        file,
        config_key: driver.map(|d| driver_key(&d)),
    })
}

/// The files of the installed package(s) of service `service` that its drivers may open
/// (NdisOpenFile: firmware an INF copies beside the driver): each copied file under the Windows
/// directory, by NT path (`\SystemRoot\system32\drivers\fw.bin`), read now (a driver host
/// opens no file). Files that cannot be read are left out (the driver's open then fails).
pub fn package_files(
    root: &Root,
    store: &RegistryStore,
    service: &str,
) -> Result<Vec<(String, Vec<u8>)>, InstallError> {
    let windows = root.windows();
    let mut files = Vec::new();
    for package in super::manage::packages(store)? {
        if !package
            .services
            .iter()
            .any(|s| s.eq_ignore_ascii_case(service))
        {
            continue;
        }
        for file in &package.files {
            let path = std::path::Path::new(file);
            let Ok(rel) = path.strip_prefix(&windows) else {
                continue;
            };
            let Ok(bytes) = std::fs::read(path) else {
                continue;
            };
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            files.push((format!(r"\SystemRoot\{}", rel.join("\\")), bytes));
        }
    }
    Ok(files)
}

/// Starts an installed network adapter the way NDIS does: the function driver (an NDIS miniport)
/// is loaded, the device (if any) plugged into the host's PCI bus (a real function gets the guest
/// memory mapped for its DMA first), and the adapter initialized with the configuration in its
/// driver key. Runs in this process (`--in-process`); see [`isolated_nic_params`] for a driver
/// host of its own.
pub fn start_nic(
    root: &Root,
    store: &RegistryStore,
    setup: HostSetup,
    instance: &str,
    backend: NicBackend,
    say: &mut dyn FnMut(String),
) -> Result<NetAdapter, InstallError> {
    let NicPlan {
        service,
        file,
        config_key,
    } = nic_plan(root, store, instance)?;
    let mut host = new_host(store, setup)?;
    for (path, bytes) in package_files(root, store, &service)? {
        ndis::file::provide_file(&mut host.k, &path, bytes);
    }
    let (device, wake, on): (Option<Box<dyn PciFunction>>, _, _) = match backend {
        NicBackend::Model { wire, wake } => {
            let model = model_for_instance(instance)
                .ok_or_else(|| other(format!("{instance}: no software model for this device")))?;
            let device = host_linux::models::build(&model, MODEL_MAC, wire)
                .ok_or_else(|| other(format!("no software model named {model}")))?;
            (Some(device), wake, format!("on the {model} model"))
        }
        NicBackend::Vfio { address } => {
            let mut device = VfioPciDevice::open(&address).map_err(other)?;
            device
                .map_guest_memory(&host.k.m.mem.dma_window())
                .map_err(other)?;
            (
                Some(Box::new(device) as Box<dyn PciFunction>),
                Vec::new(),
                format!("on {address} through VFIO"),
            )
        }
        NicBackend::Virtual => (None, Vec::new(), "as a virtual adapter".to_string()),
    };
    let nic = match device {
        Some(device) => NetAdapter::start(host, &file, device, config_key.as_deref(), wake),
        None => NetAdapter::start_virtual(host, &file, config_key.as_deref()),
    }
    .map_err(other)?;
    say(format!(
        "{service}: {} loaded {on}, MiniportInitialize succeeded",
        file.display()
    ));
    Ok(nic)
}

/// What a driver host of its own needs to start the installed network adapter `instance` on
/// `backend` (a software model or none): the start message with the driver file and its
/// configuration key, the drivers' view of the registry (their service, driver and device keys);
/// and `SERVICE: FILE` for messages.
pub fn isolated_nic_params(
    root: &Root,
    store: &RegistryStore,
    setup: HostSetup,
    instance: &str,
    backend: Backend,
) -> Result<(StartParams, HostRegistry, String), InstallError> {
    let plan = nic_plan(root, store, instance)?;
    let driver = DriverFile::read(&plan.file).map_err(other)?;
    let mut keys = vec![service_key(&plan.service)];
    keys.extend(plan.config_key.clone());
    keys.push(enum_key(instance));
    let what = format!("{}: {}", plan.service, plan.file.display());
    let params = StartParams {
        arch: dbt_arch(setup.arch),
        stack: Stack::Nic {
            driver,
            config_key: plan.config_key,
            backend,
        },
        registry: Vec::new(),
        watchdog: ntoskrnl::Watchdog::default(),
        verifier: setup.verifier,
        files: package_files(root, store, &plan.service)?,
    };
    Ok((params, HostRegistry::new(store.clone(), keys), what))
}

/// Whether `instance` is a root-enumerated device (`ROOT\...`).
pub fn is_root_device(instance: &str) -> bool {
    instance.len() >= 5 && instance[..5].eq_ignore_ascii_case("ROOT\\")
}

/// Starts legacy (non-PnP) services in this process: DriverEntry of each.
pub fn start_services(
    root: &Root,
    store: &RegistryStore,
    setup: HostSetup,
    services: &[String],
    say: &mut dyn FnMut(String),
) -> Result<Running, InstallError> {
    let stack = services_stack(root, store, services)?;
    start_stack(new_host(store, setup)?, &stack, say)
}

/// The registry keys the drivers of `stack` read and write: their service keys, and a device's
/// `Enum` key and driver key.
pub fn stack_keys(store: &RegistryStore, stack: &Stack) -> Result<Vec<String>, InstallError> {
    let mut keys = Vec::new();
    match stack {
        Stack::Device { instance, drivers } => {
            keys.extend(drivers.iter().map(|d| service_key(&d.service)));
            let ekey = enum_key(instance);
            if let Some(d) = store.value(&ekey, "Driver")?.and_then(|v| v.as_str()) {
                keys.push(driver_key(&d));
            }
            keys.push(ekey);
        }
        Stack::Services(drivers) => keys.extend(drivers.iter().map(|d| service_key(&d.service))),
        Stack::Run(file) => keys.push(service_key(&file.service())),
        Stack::Nic { .. } => {}
    }
    let mut unique: Vec<String> = Vec::new();
    for k in keys {
        if !unique.iter().any(|u| u.eq_ignore_ascii_case(&k)) {
            unique.push(k);
        }
    }
    Ok(unique)
}

/// What a driver host of its own needs to start `stack`: the start message (the registry is read
/// at every start) and the drivers' view of `store`.
pub fn isolated_stack_params(
    store: &RegistryStore,
    setup: HostSetup,
    stack: Stack,
) -> Result<(StartParams, HostRegistry), InstallError> {
    let keys = stack_keys(store, &stack)?;
    let params = StartParams {
        arch: dbt_arch(setup.arch),
        stack,
        registry: Vec::new(),
        watchdog: ntoskrnl::Watchdog::default(),
        verifier: setup.verifier,
        files: Vec::new(),
    };
    Ok((params, HostRegistry::new(store.clone(), keys)))
}

/// Removes the device stack and unloads every driver (DriverUnload), newest first, reporting pool
/// the drivers did not free; returns what the verifier found (one line each; empty with it off).
pub fn stop(mut run: Running, say: &mut dyn FnMut(String)) -> Result<Vec<String>, InstallError> {
    if let Some(pdo) = run.pdo.take() {
        let q = pnp::remove_device(&mut run.host.k, pdo).map_err(|e| other(run.host.fail(e)))?;
        if !status::nt_success(q) {
            return Err(fails("IRP_MN_QUERY_REMOVE_DEVICE", q));
        }
        say(format!(
            "device {} removed (IRP_MN_QUERY_REMOVE_DEVICE: {}, IRP_MN_REMOVE_DEVICE sent)",
            run.instance.as_deref().unwrap_or("?"),
            status::name(q)
        ));
    }
    while let Some((driver, image)) = run.drivers.pop() {
        run.host.unload_driver(&driver).map_err(other)?;
        let leaked = run.host.k.pool.bytes_owned_by(&image);
        if leaked == 0 {
            say(format!("{}: DriverUnload done", driver.service));
        } else {
            say(format!(
                "{}: DriverUnload done, but {leaked} bytes of pool are still allocated",
                driver.service
            ));
        }
    }
    let findings = run.host.k.verifier.take_findings();
    Ok(findings.iter().map(ToString::to_string).collect())
}
