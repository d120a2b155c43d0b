//! Real PCI hardware through Linux VFIO: [`VfioPciDevice`] is a [`PciDevice`] like the software
//! models, so the bus, the dispatcher and NDIS drive a card bound to `vfio-pci` the way they drive
//! a model. Configuration space goes through VFIO's config region with the BARs, the expansion
//! ROM BAR and the interrupt line virtualized (`config.rs`); BAR registers are read and written
//! through the BAR regions (mmap where VFIO allows it, pread/pwrite otherwise); INTx arrives on an
//! eventfd, is masked by the kernel when it fires and unmasked at the end of the guest's interrupt
//! handling ([`PciDevice::end_of_interrupt`]); the device reaches guest memory by DMA through an
//! IOMMU mapping of the guest window at its guest-physical addresses
//! ([`VfioPciDevice::map_guest_memory`]).
//!
//! The device side sits behind [`VfioBackend`]: the kernel's vfio-pci ([`KernelVfio`], opened by
//! [`VfioPciDevice::open`]) or a software model presented the way vfio-pci presents a device
//! ([`EmulatedVfio`]), which is how this path is tested on machines without an IOMMU or a spare
//! card. Tests on real hardware come later.

mod config;
mod emulated;
mod kernel;
pub mod uapi;

use std::cell::Cell;
use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;

use crate::device::{access_mask, Bar, Dma, PciDevice, CMD_BUS_MASTER};

pub use emulated::{EmulatedHandle, EmulatedVfio, FIRMWARE_IO, FIRMWARE_MMIO};
pub use kernel::KernelVfio;

use config::{decode_bars, VirtualConfig};
use uapi::VFIO_PCI_CONFIG_REGION_INDEX;

/// Why a VFIO device could not be opened or set up: one line naming the device, the step and
/// what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfioError(pub String);

impl std::fmt::Display for VfioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VfioError {}

/// The Linux driver a function must be bound to.
pub const VFIO_DRIVER: &str = "vfio-pci";

/// Where the host's VFIO and PCI facts live (the real ones in [`Paths::system`]; tests point
/// them at a fake tree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `/sys/bus/pci/devices`.
    pub sysfs_pci: PathBuf,
    /// `/dev/vfio`.
    pub dev_vfio: PathBuf,
}

impl Paths {
    /// The running system's.
    pub fn system() -> Paths {
        Paths {
            sysfs_pci: PathBuf::from(crate::pci::SYSFS_PCI_DEVICES),
            dev_vfio: PathBuf::from("/dev/vfio"),
        }
    }
}

/// The shell commands that hand function `address` (now bound to `driver`, if any) to vfio-pci.
pub fn bind_instructions(address: &str, driver: Option<&str>) -> String {
    let dev = format!("{}/{address}", crate::pci::SYSFS_PCI_DEVICES);
    let mut steps = vec!["modprobe vfio-pci".to_string()];
    if driver.is_some() {
        steps.push(format!("echo {address} > {dev}/driver/unbind"));
    }
    steps.push(format!("echo vfio-pci > {dev}/driver_override"));
    steps.push(format!("echo {address} > /sys/bus/pci/drivers_probe"));
    steps.join("; ")
}

/// What [`VfioPciDevice`] needs of a VFIO device: its regions (vfio-pci's fixed indexes: BARs
/// 0..=5, config space 7), its INTx line and the IOMMU. Offsets are relative to the region.
pub trait VfioBackend {
    /// Size of region `index` in bytes; 0 when the device does not implement it.
    fn region_size(&self, index: u32) -> u64;
    /// Reads `buf.len()` bytes (1, 2, 4 or 8: one access of that width) at `offset` of region
    /// `index`.
    fn read(&mut self, index: u32, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `data` (1, 2, 4 or 8 bytes: one access of that width) at `offset` of region
    /// `index`.
    fn write(&mut self, index: u32, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Whether INTx fired since the last call, without blocking. A fired line stays masked
    /// until [`unmask_intx`](Self::unmask_intx) (level-triggered INTx is auto-masked by VFIO).
    fn intx_fired(&self) -> bool;
    /// Unmasks INTx after the guest handled it; a line still asserted fires again.
    fn unmask_intx(&mut self) -> io::Result<()>;
    /// A descriptor that becomes readable when INTx fires, if the backend has one.
    fn wake_fd(&self) -> Option<RawFd>;
    /// Lets the device reach `window` by DMA at the window's guest-physical addresses. Called
    /// once; the mapping ends with the backend.
    fn map_dma(&mut self, window: &dbt::DmaWindow) -> Result<(), String>;
    /// Work the host must do for the device: nothing for hardware, which runs by itself; an
    /// emulated device runs its model here, its DMA going through `dma`.
    fn poll(&mut self, dma: &mut dyn Dma);
}

/// A PCI function driven through VFIO: config space with virtual BARs, BAR access, INTx and DMA
/// into guest memory. See the module documentation.
pub struct VfioPciDevice {
    /// The function's name in messages (its PCI address).
    name: String,
    backend: Box<dyn VfioBackend>,
    config: VirtualConfig,
    config_size: u64,
    bars: Vec<Bar>,
    /// INTx fired and has not been acknowledged ([`PciDevice::end_of_interrupt`]) yet.
    intx: Cell<bool>,
    /// Guest memory is mapped for the device's DMA; bus mastering stays off until it is.
    dma_mapped: bool,
    /// Whether a failed region access was reported already (further ones go to debug level).
    warned_io: bool,
}

impl std::fmt::Debug for VfioPciDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfioPciDevice")
            .field("name", &self.name)
            .field("bars", &self.bars)
            .field("dma_mapped", &self.dma_mapped)
            .finish()
    }
}

impl VfioPciDevice {
    /// Opens the PCI function at `address` (`DDDD:BB:DD.F`), which must be bound to vfio-pci:
    /// its IOMMU group joins a new container (type1 IOMMU, or no-IOMMU mode where the kernel runs
    /// VFIO without one), its regions are mapped and its INTx is routed to an eventfd.
    pub fn open(address: &str) -> Result<VfioPciDevice, VfioError> {
        Self::open_with(&Paths::system(), address)
    }

    /// [`open`](Self::open) with the sysfs and `/dev/vfio` locations in `paths`.
    pub fn open_with(paths: &Paths, address: &str) -> Result<VfioPciDevice, VfioError> {
        let backend = KernelVfio::open(paths, address)?;
        Self::with_backend(address, Box::new(backend))
    }

    /// A device over `backend`, named `name` in messages: the BARs are read from its config
    /// region (flags) and region sizes; bus mastering is turned off until guest memory is mapped.
    pub fn with_backend(
        name: &str,
        backend: Box<dyn VfioBackend>,
    ) -> Result<VfioPciDevice, VfioError> {
        let config_size = backend.region_size(VFIO_PCI_CONFIG_REGION_INDEX);
        if config_size < 64 {
            return Err(VfioError(format!(
                "{name}: VFIO reports a config region of {config_size} bytes, not a PCI function"
            )));
        }
        let mut dev = VfioPciDevice {
            name: name.to_string(),
            backend,
            config: VirtualConfig::new(&[]),
            config_size,
            bars: Vec::new(),
            intx: Cell::new(false),
            dma_mapped: false,
            warned_io: false,
        };
        let mut regs = [0u32; 6];
        let mut sizes = [0u64; 6];
        for i in 0..6 {
            regs[i] = dev.real_config_read(0x10 + 4 * i as u16, 4)?;
            sizes[i] = dev.backend.region_size(i as u32);
        }
        let bars = decode_bars(regs, sizes);
        dev.bars = bars.iter().map(|b| b.bar).collect();
        dev.config = VirtualConfig::new(&bars);
        let cmd = dev.real_config_read(0x04, 2)?;
        dev.real_config_write(0x04, 2, cmd & !u32::from(CMD_BUS_MASTER))?;
        Ok(dev)
    }

    /// The function's PCI address (or the name given to [`with_backend`](Self::with_backend)).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Maps the guest window for the device's DMA (VFIO_IOMMU_MAP_DMA: the window's host memory
    /// at IO virtual address = guest-physical address, so the bus addresses drivers get from
    /// MmGetPhysicalAddress and NDIS reach it); from then on the guest may enable bus mastering.
    /// The mapping pins the whole window (the locked-memory limit, `ulimit -l`, must allow it
    /// unless running as root) and lasts as long as the device.
    pub fn map_guest_memory(&mut self, window: &dbt::DmaWindow) -> Result<(), VfioError> {
        self.backend
            .map_dma(window)
            .map_err(|e| VfioError(format!("{}: {e}", self.name)))?;
        self.dma_mapped = true;
        Ok(())
    }

    fn real_config_read(&mut self, offset: u16, size: u8) -> Result<u32, VfioError> {
        let mut b = [0u8; 4];
        let buf = &mut b[..size as usize];
        self.backend
            .read(VFIO_PCI_CONFIG_REGION_INDEX, offset.into(), buf)
            .map_err(|e| {
                VfioError(format!(
                    "{}: reading config space at {offset:#x}: {e}",
                    self.name
                ))
            })?;
        Ok(u32::from_le_bytes(b))
    }

    fn real_config_write(&mut self, offset: u16, size: u8, value: u32) -> Result<(), VfioError> {
        let b = value.to_le_bytes();
        self.backend
            .write(
                VFIO_PCI_CONFIG_REGION_INDEX,
                offset.into(),
                &b[..size as usize],
            )
            .map_err(|e| {
                VfioError(format!(
                    "{}: writing config space at {offset:#x}: {e}",
                    self.name
                ))
            })
    }

    /// Reports a failed register access: the first at warning level, the rest at debug level.
    fn io_failed(&mut self, e: VfioError) {
        if self.warned_io {
            tracing::debug!("{e}");
        } else {
            self.warned_io = true;
            tracing::warn!(
                "{e} (a failed read gives all ones, a failed write is dropped; further failures \
                 are logged at debug level)"
            );
        }
    }

    /// Whether `size` bytes at `offset` lie inside BAR number `bar`.
    fn in_bar(&self, bar: usize, offset: u64, size: u8) -> bool {
        self.bars.iter().any(|b| {
            b.index as usize == bar
                && offset
                    .checked_add(size as u64)
                    .is_some_and(|end| end <= b.size.min(self.backend.region_size(bar as u32)))
        })
    }
}

impl PciDevice for VfioPciDevice {
    fn config_read(&mut self, offset: u16, size: u8) -> u32 {
        if u64::from(offset) + u64::from(size) > self.config_size || !matches!(size, 1 | 2 | 4) {
            return access_mask(size) as u32;
        }
        let all = (1u8 << size) - 1;
        let real = if VirtualConfig::virtual_bytes(offset, size) == all {
            0
        } else {
            match self.real_config_read(offset, size) {
                Ok(v) => v,
                Err(e) => {
                    self.io_failed(e);
                    return access_mask(size) as u32;
                }
            }
        };
        self.config.read(offset, size, real)
    }

    fn config_write(&mut self, offset: u16, size: u8, value: u32) {
        if u64::from(offset) + u64::from(size) > self.config_size || !matches!(size, 1 | 2 | 4) {
            return;
        }
        for (off, n, mut v) in self.config.write(offset, size, value) {
            // Bus mastering only once the device's DMA is confined to guest memory.
            if !self.dma_mapped && off <= 0x04 && 0x04 < off + n as u16 {
                v &= !(u32::from(CMD_BUS_MASTER) << (8 * (0x04 - off)));
            }
            if let Err(e) = self.real_config_write(off, n, v) {
                self.io_failed(e);
            }
        }
    }

    fn bars(&self) -> Vec<Bar> {
        self.bars.clone()
    }

    fn bar_read(&mut self, bar: usize, offset: u64, size: u8) -> u64 {
        if !matches!(size, 1 | 2 | 4 | 8) || !self.in_bar(bar, offset, size) {
            return access_mask(size);
        }
        let mut b = [0u8; 8];
        match self
            .backend
            .read(bar as u32, offset, &mut b[..size as usize])
        {
            Ok(()) => u64::from_le_bytes(b),
            Err(e) => {
                let name = &self.name;
                self.io_failed(VfioError(format!(
                    "{name}: reading BAR{bar} at {offset:#x} ({size} bytes): {e}"
                )));
                access_mask(size)
            }
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, size: u8, value: u64) {
        if !matches!(size, 1 | 2 | 4 | 8) || !self.in_bar(bar, offset, size) {
            return;
        }
        let b = value.to_le_bytes();
        if let Err(e) = self.backend.write(bar as u32, offset, &b[..size as usize]) {
            let name = &self.name;
            self.io_failed(VfioError(format!(
                "{name}: writing BAR{bar} at {offset:#x} ({size} bytes): {e}"
            )));
        }
    }

    fn interrupt_pending(&self) -> bool {
        if !self.intx.get() && self.backend.intx_fired() {
            self.intx.set(true);
        }
        self.intx.get()
    }

    fn end_of_interrupt(&mut self) {
        if self.intx.replace(false) {
            if let Err(e) = self.backend.unmask_intx() {
                let name = &self.name;
                self.io_failed(VfioError(format!("{name}: unmasking INTx: {e}")));
            }
        }
    }

    fn wake_fd(&self) -> Option<RawFd> {
        self.backend.wake_fd()
    }

    fn poll(&mut self, dma: &mut dyn Dma) {
        self.backend.poll(dma);
    }
}

#[cfg(test)]
mod tests;
