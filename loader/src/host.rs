//! The driver host: one kernel (guest machine + personality) with the drivers loaded into it, and
//! the operations a user or a test performs on them.

use std::path::Path;

use dbt::Arch;
use ntoskrnl::pnp::{self, Driver};
use ntoskrnl::status::{self, NtStatus};
use ntoskrnl::verifier::Finding;
use ntoskrnl::{Kernel, KernelError, LoadedImage, Module};

use host_linux::bus::{GuestDma, PciResources, SharedPciBus};
use host_linux::device::PciDevice;

use crate::{image, pe};

/// Size of the kernel stack drivers run on.
const STACK_SIZE: u64 = 256 * 1024;

/// Every module the personality provides, in binding order.
pub fn modules() -> [&'static Module; 5] {
    [
        &ntoskrnl::MODULE,
        &hal::MODULE,
        &ndis::MODULE,
        &portcls::MODULE,
        &ks::MODULE,
    ]
}

/// A file that could not be loaded: names the file and the problem.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct LoadError {
    /// The file.
    pub file: String,
    /// What is wrong with it.
    pub problem: String,
}

/// Why a driver operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The image could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The driver's code failed (fault, trap, bug check ...); `report` has the full picture.
    #[error("{report}")]
    Kernel {
        /// The error.
        error: KernelError,
        /// Multi-line report with registers, guest backtrace and recent kernel calls.
        report: String,
    },
    /// DriverEntry (or AddDevice) returned a failure status.
    #[error("{driver}: {what} failed with {}", status::name(*status))]
    DriverFailed {
        /// Driver service name.
        driver: String,
        /// Which routine.
        what: &'static str,
        /// The status it returned.
        status: NtStatus,
    },
    /// The verifier found problems the drivers survived (leaks at unload, ...).
    #[error("{}", findings_text(.0))]
    Findings(Vec<Finding>),
    /// The driver host serving the device failed (`cause` says how; the manager logged the full
    /// report): the request failed, and so does every handle opened on that driver host. Reopen
    /// the device: the manager restarts the stack.
    #[error("{cause} ({})", status::name(*status))]
    HostFailed {
        /// STATUS_DEVICE_DOES_NOT_EXIST.
        status: NtStatus,
        /// What happened, in one line.
        cause: String,
    },
    /// Not a handle this client opened (or one it closed).
    #[error("invalid handle {0}")]
    InvalidHandle(u32),
}

/// The Win32-shaped client I/O API on device names (CreateFile, DeviceIoControl, ReadFile,
/// WriteFile, CloseHandle): served by a [`DriverHost`] in this process, or through the manager by
/// a driver host of its own ([`IsolatedStack`](crate::isolate::IsolatedStack)).
pub trait DeviceIo {
    /// Opens a device by name (`\\.\Name`): a handle, or the IRP_MJ_CREATE status on failure.
    fn open(&mut self, path: &str) -> Result<Result<u32, NtStatus>, HostError>;
    /// DeviceIoControl on an open handle; `output` is the caller's output buffer.
    fn ioctl(
        &mut self,
        handle: u32,
        code: u32,
        input: &[u8],
        output: &[u8],
    ) -> Result<ntoskrnl::io::IoResult, HostError>;
    /// ReadFile of up to `len` bytes.
    fn read(&mut self, handle: u32, len: usize) -> Result<ntoskrnl::io::IoResult, HostError>;
    /// WriteFile.
    fn write(&mut self, handle: u32, data: &[u8]) -> Result<ntoskrnl::io::IoResult, HostError>;
    /// CloseHandle: the IRP_MJ_CLOSE status.
    fn close(&mut self, handle: u32) -> Result<NtStatus, HostError>;
}

/// `the verifier found N problem(s):` and one line per finding.
pub fn findings_text<F: std::fmt::Display>(findings: &[F]) -> String {
    let mut text = format!("the verifier found {} problem(s):", findings.len());
    for f in findings {
        text.push_str(&format!("\n  {f}"));
    }
    text
}

/// A driver file's name and contents: what a driver host loads (it never has to open the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverFile {
    /// File name, e.g. `netcard.sys` (the image's name in reports).
    pub name: String,
    /// The PE image.
    pub bytes: Vec<u8>,
}

impl DriverFile {
    /// Reads a driver file.
    pub fn read(path: &Path) -> Result<DriverFile, LoadError> {
        let bytes = std::fs::read(path).map_err(|e| LoadError {
            file: path.display().to_string(),
            problem: format!("cannot read: {e}"),
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Ok(DriverFile { name, bytes })
    }

    /// The service name a driver loaded from this file gets: the file name without extension.
    pub fn service(&self) -> String {
        Path::new(&self.name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.name.clone())
    }

    /// Parses the image (architecture, imports ...).
    pub fn parse(&self) -> Result<pe::PeImage, LoadError> {
        pe::parse(&self.bytes).map_err(|e| LoadError {
            file: self.name.clone(),
            problem: e.problem,
        })
    }
}

/// Reads a driver file and tells which architecture it is for.
pub fn read_image(path: &Path) -> Result<pe::PeImage, LoadError> {
    let file = DriverFile::read(path)?;
    pe::parse(&file.bytes).map_err(|e| LoadError {
        file: path.display().to_string(),
        problem: e.problem,
    })
}

/// A kernel with drivers loaded into it.
pub struct DriverHost {
    /// The kernel (guest machine and personality state).
    pub k: Kernel,
    /// Software PCI devices; installed as the machine's port I/O by the first
    /// [`attach_pci_device`](Self::attach_pci_device).
    pci: SharedPciBus,
}

impl DriverHost {
    /// A fresh kernel for `arch` serving every module.
    pub fn new(arch: Arch) -> Result<DriverHost, HostError> {
        let mut k = Kernel::new(arch, &modules()).map_err(|error| HostError::Kernel {
            report: error.to_string(),
            error,
        })?;
        k.m.setup_stack(STACK_SIZE).map_err(|e| HostError::Kernel {
            report: e.to_string(),
            error: e.into(),
        })?;
        Ok(DriverHost {
            k,
            pci: SharedPciBus::default(),
        })
    }

    /// Turns the verifier on or off (before any driver is loaded).
    pub fn with_verifier(mut self, on: bool) -> DriverHost {
        self.k.verifier.set_enabled(on);
        self
    }

    /// Backs the kernel's registry API with the persistent store (instead of the in-memory
    /// registry every kernel starts with).
    pub fn with_registry(mut self, store: &crate::registry::RegistryStore) -> DriverHost {
        ntoskrnl::registry::set_backend(&mut self.k, Box::new(store.backend()));
        self
    }

    /// Wraps a kernel error with its report.
    pub fn fail(&self, error: KernelError) -> HostError {
        HostError::Kernel {
            report: self.k.report(&error),
            error,
        }
    }

    /// Maps a driver image and binds its imports (nothing of it runs yet).
    pub fn load_image(&mut self, path: &Path) -> Result<LoadedImage, LoadError> {
        self.map_file(&DriverFile::read(path)?)
    }

    /// [`load_image`](Self::load_image) of a file already read.
    pub fn map_file(&mut self, file: &DriverFile) -> Result<LoadedImage, LoadError> {
        let pe = file.parse()?;
        if pe.arch != self.k.arch() {
            return Err(LoadError {
                file: file.name.clone(),
                problem: format!(
                    "is an {} driver, but this driver host runs {} drivers",
                    pe.arch.name(),
                    self.k.arch().name()
                ),
            });
        }
        image::map_image(&mut self.k, &file.name, &pe).map_err(|problem| LoadError {
            file: file.name.clone(),
            problem,
        })
    }

    /// Loads a driver and runs its DriverEntry; the service name is the file stem.
    pub fn load_driver(&mut self, path: &Path) -> Result<Driver, HostError> {
        self.load_driver_file(&DriverFile::read(path)?)
    }

    /// [`load_driver`](Self::load_driver) of a file already read.
    pub fn load_driver_file(&mut self, file: &DriverFile) -> Result<Driver, HostError> {
        let image = self.map_file(file)?;
        let service = file.service();
        ntoskrnl::registry::ensure_service_key(&mut self.k, &service, &image.name);
        let (driver, status) =
            pnp::initialize_driver(&mut self.k, &image, &service).map_err(|e| self.fail(e))?;
        if !status::nt_success(status) {
            return Err(HostError::DriverFailed {
                driver: service,
                what: "DriverEntry",
                status,
            });
        }
        Ok(driver)
    }

    /// Builds a PnP device stack on a new root-enumerated PDO: AddDevice of each driver, bottom to
    /// top (function driver first, then upper filters), then IRP_MN_START_DEVICE. Returns the PDO.
    pub fn build_stack(&mut self, device_id: &str, drivers: &[&Driver]) -> Result<u64, HostError> {
        let pdo = pnp::create_root_device(&mut self.k, device_id).map_err(|e| self.fail(e))?;
        for driver in drivers {
            let status = pnp::add_device(&mut self.k, driver, pdo).map_err(|e| self.fail(e))?;
            if !status::nt_success(status) {
                return Err(HostError::DriverFailed {
                    driver: driver.service.clone(),
                    what: "AddDevice",
                    status,
                });
            }
        }
        let status = pnp::start_device(&mut self.k, pdo).map_err(|e| self.fail(e))?;
        if !status::nt_success(status) {
            return Err(HostError::DriverFailed {
                driver: device_id.into(),
                what: "IRP_MN_START_DEVICE",
                status,
            });
        }
        Ok(pdo)
    }

    /// Removes a device stack built by [`build_stack`](Self::build_stack).
    pub fn remove_stack(&mut self, pdo: u64) -> Result<NtStatus, HostError> {
        pnp::remove_device(&mut self.k, pdo).map_err(|e| self.fail(e))
    }

    /// Runs DriverUnload, frees the driver object and unmaps the driver's image (its translated
    /// code is dropped, so a reload at the same address starts clean).
    pub fn unload_driver(&mut self, driver: &Driver) -> Result<(), HostError> {
        let field = driver.object + self.k.layout.driver_object_driver_start;
        let start = self.k.read_ptr(field).map_err(|e| self.fail(e))?;
        pnp::unload_driver(&mut self.k, driver).map_err(|e| self.fail(e))?;
        if let Some(i) = self.k.images.iter().position(|im| im.base == start) {
            let image = self.k.images.remove(i);
            self.k.m.invalidate_code(image.base, image.size);
            self.k
                .m
                .mem
                .free(image.base)
                .map_err(|e| self.fail(e.into()))?;
        }
        Ok(())
    }

    /// Opens a device by name (`\\.\Name`): the IRP_MJ_CREATE status on failure.
    pub fn open(&mut self, path: &str) -> Result<Result<u32, NtStatus>, HostError> {
        ntoskrnl::io::open(&mut self.k, path).map_err(|e| self.fail(e))
    }

    /// DeviceIoControl on an open handle.
    pub fn ioctl(
        &mut self,
        handle: u32,
        code: u32,
        input: &[u8],
        output: &[u8],
    ) -> Result<ntoskrnl::io::IoResult, HostError> {
        ntoskrnl::io::device_io_control(&mut self.k, handle, code, input, output)
            .map_err(|e| self.fail(e))
    }

    /// ReadFile.
    pub fn read(&mut self, handle: u32, len: usize) -> Result<ntoskrnl::io::IoResult, HostError> {
        ntoskrnl::io::read(&mut self.k, handle, len).map_err(|e| self.fail(e))
    }

    /// WriteFile.
    pub fn write(&mut self, handle: u32, data: &[u8]) -> Result<ntoskrnl::io::IoResult, HostError> {
        ntoskrnl::io::write(&mut self.k, handle, data).map_err(|e| self.fail(e))
    }

    /// CloseHandle (IRP_MJ_CLEANUP + IRP_MJ_CLOSE).
    pub fn close(&mut self, handle: u32) -> Result<NtStatus, HostError> {
        ntoskrnl::io::close(&mut self.k, handle).map_err(|e| self.fail(e))
    }

    /// Plugs a software PCI device into the host's bus, makes the bus the machine's port I/O and
    /// MMIO backend (MmMapIoSpace mappings reach its memory BARs) and returns what the device was
    /// given (I/O ports, memory BARs, interrupt line) for the bus driver layers to report as its
    /// resources.
    pub fn attach_pci_device(&mut self, dev: Box<dyn PciDevice>) -> PciResources {
        let res = self.pci.attach(dev);
        self.k.m.set_port_io(Box::new(self.pci.clone()));
        self.k.m.set_mmio(Box::new(self.pci.clone()));
        res
    }

    /// The PCI bus devices are attached to.
    pub fn pci_bus(&self) -> &SharedPciBus {
        &self.pci
    }

    /// Polls every PCI device with DMA into guest memory; returns the interrupt lines asserted.
    pub fn poll_pci(&mut self) -> Vec<u32> {
        self.pci.poll(&mut GuestDma::new(&mut self.k.m.mem))
    }
}

impl DeviceIo for DriverHost {
    fn open(&mut self, path: &str) -> Result<Result<u32, NtStatus>, HostError> {
        DriverHost::open(self, path)
    }
    fn ioctl(
        &mut self,
        handle: u32,
        code: u32,
        input: &[u8],
        output: &[u8],
    ) -> Result<ntoskrnl::io::IoResult, HostError> {
        DriverHost::ioctl(self, handle, code, input, output)
    }
    fn read(&mut self, handle: u32, len: usize) -> Result<ntoskrnl::io::IoResult, HostError> {
        DriverHost::read(self, handle, len)
    }
    fn write(&mut self, handle: u32, data: &[u8]) -> Result<ntoskrnl::io::IoResult, HostError> {
        DriverHost::write(self, handle, data)
    }
    fn close(&mut self, handle: u32) -> Result<NtStatus, HostError> {
        DriverHost::close(self, handle)
    }
}

/// Execution statistics of `host` over `wall` time, one line each.
pub fn stats_lines(host: &DriverHost, wall: std::time::Duration) -> Vec<String> {
    let s = &host.k.m.stats;
    let hs = &host.k.stats;
    let hit_rate = if s.block_lookups > 0 {
        100.0 * s.block_cache_hits as f64 / s.block_lookups as f64
    } else {
        0.0
    };
    vec![
        format!("guest instructions executed: {}", s.instructions),
        format!(
            "blocks translated: {}, block cache hit rate {hit_rate:.1}%",
            s.blocks_translated
        ),
        format!(
            "import calls served: {}, host -> guest calls: {}",
            hs.host_calls, hs.guest_calls
        ),
        format!(
            "wall time {:.3} ms: guest code {:.3} ms, host services {:.3} ms",
            wall.as_secs_f64() * 1e3,
            hs.guest_nanos as f64 / 1e6,
            hs.host_nanos as f64 / 1e6
        ),
    ]
}
