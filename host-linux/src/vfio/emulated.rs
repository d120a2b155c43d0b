//! A software device model presented the way vfio-pci presents a real function, so the VFIO
//! path ([`super::VfioPciDevice`]: virtual BARs, region access, auto-masked INTx with unmask at
//! the end of interrupt, DMA confined to the IOMMU mapping) runs where there is no IOMMU or card.
//! The model's BARs are placed at "firmware" addresses of their own, as the host's firmware places
//! a real card's, and the model's DMA goes through the IOMMU window only.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;

use super::uapi::VFIO_PCI_CONFIG_REGION_INDEX;
use super::VfioBackend;
use crate::device::{Bar, BarKind, Dma, DmaError, PciDevice, CMD_IO, CMD_MEMORY};

/// First I/O port and memory address the emulated firmware gives BARs (away from the guest-side
/// addresses the ICA bus hands out, so a leak of one into the other shows).
pub const FIRMWARE_IO: u64 = 0xE000;
pub const FIRMWARE_MMIO: u64 = 0xFEB0_0000;

struct State {
    model: Box<dyn PciDevice>,
    bars: Vec<Bar>,
    /// INTx fired and was not unmasked yet.
    masked: bool,
    unmasks: u64,
    /// The IOMMU mapping (iova, size).
    window: Option<(u64, u64)>,
    /// DMA accesses outside the IOMMU mapping (an IOMMU fault on real hardware).
    faults: Vec<DmaError>,
}

/// A model behind the [`VfioBackend`] interface (see the module documentation).
pub struct EmulatedVfio(Rc<RefCell<State>>);

/// What a test sees of an [`EmulatedVfio`] after handing it to a [`super::VfioPciDevice`].
#[derive(Clone)]
pub struct EmulatedHandle(Rc<RefCell<State>>);

impl EmulatedVfio {
    /// `model` with its BARs programmed at firmware addresses ([`FIRMWARE_IO`],
    /// [`FIRMWARE_MMIO`] up) and I/O and memory decode on, as after the host's boot.
    pub fn new(mut model: Box<dyn PciDevice>) -> (EmulatedVfio, EmulatedHandle) {
        let bars = model.bars();
        let (mut io, mut mem) = (FIRMWARE_IO, FIRMWARE_MMIO);
        for b in &bars {
            let next = if b.kind == BarKind::Io {
                &mut io
            } else {
                &mut mem
            };
            let base = next.div_ceil(b.size) * b.size;
            *next = base + b.size;
            let flags = u32::from(b.kind == BarKind::Io);
            model.config_write(0x10 + 4 * u16::from(b.index), 4, base as u32 | flags);
        }
        let cmd = model.config_read(0x04, 2) | u32::from(CMD_IO | CMD_MEMORY);
        model.config_write(0x04, 2, cmd);
        let state = Rc::new(RefCell::new(State {
            model,
            bars,
            masked: false,
            unmasks: 0,
            window: None,
            faults: Vec::new(),
        }));
        (EmulatedVfio(state.clone()), EmulatedHandle(state))
    }
}

impl EmulatedHandle {
    /// Reads the configuration space of the device itself (not the guest's virtual view).
    pub fn device_config_read(&self, offset: u16, size: u8) -> u32 {
        self.0.borrow_mut().model.config_read(offset, size)
    }

    /// How often INTx was unmasked.
    pub fn unmasks(&self) -> u64 {
        self.0.borrow().unmasks
    }

    /// The IOMMU mapping (IO address, size), once made.
    pub fn dma_window(&self) -> Option<(u64, u64)> {
        self.0.borrow().window
    }

    /// DMA accesses the IOMMU refused.
    pub fn iommu_faults(&self) -> Vec<DmaError> {
        self.0.borrow().faults.clone()
    }
}

/// The model's DMA, confined to the IOMMU mapping.
struct Iommu<'a> {
    dma: &'a mut dyn Dma,
    window: Option<(u64, u64)>,
    faults: &'a mut Vec<DmaError>,
}

impl Iommu<'_> {
    fn check(&mut self, addr: u64, len: usize) -> Result<(), DmaError> {
        let inside = self.window.is_some_and(|(iova, size)| {
            addr >= iova
                && addr
                    .checked_add(len as u64)
                    .is_some_and(|e| e <= iova + size)
        });
        if inside {
            Ok(())
        } else {
            let fault = DmaError { addr, len };
            self.faults.push(fault);
            Err(fault)
        }
    }
}

impl Dma for Iommu<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        self.check(addr, buf.len())?;
        self.dma.read(addr, buf)
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), DmaError> {
        self.check(addr, data.len())?;
        self.dma.write(addr, data)
    }
}

fn bad_access() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "access outside the region")
}

impl VfioBackend for EmulatedVfio {
    fn region_size(&self, index: u32) -> u64 {
        let s = self.0.borrow();
        if index == VFIO_PCI_CONFIG_REGION_INDEX {
            return 256;
        }
        s.bars
            .iter()
            .find(|b| u32::from(b.index) == index)
            .map_or(0, |b| b.size)
    }

    fn read(&mut self, index: u32, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if offset + buf.len() as u64 > self.region_size(index) {
            return Err(bad_access());
        }
        let mut s = self.0.borrow_mut();
        let n = buf.len() as u8;
        let v = if index == VFIO_PCI_CONFIG_REGION_INDEX {
            u64::from(s.model.config_read(offset as u16, n))
        } else {
            s.model.bar_read(index as usize, offset, n)
        };
        buf.copy_from_slice(&v.to_le_bytes()[..buf.len()]);
        Ok(())
    }

    fn write(&mut self, index: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        if offset + data.len() as u64 > self.region_size(index) {
            return Err(bad_access());
        }
        let mut b = [0u8; 8];
        b[..data.len()].copy_from_slice(data);
        let v = u64::from_le_bytes(b);
        let mut s = self.0.borrow_mut();
        let n = data.len() as u8;
        if index == VFIO_PCI_CONFIG_REGION_INDEX {
            s.model.config_write(offset as u16, n, v as u32);
        } else {
            s.model.bar_write(index as usize, offset, n, v);
        }
        Ok(())
    }

    fn intx_fired(&self) -> bool {
        let mut s = self.0.borrow_mut();
        if s.masked || !s.model.interrupt_pending() {
            return false;
        }
        s.masked = true;
        true
    }

    fn unmask_intx(&mut self) -> io::Result<()> {
        let mut s = self.0.borrow_mut();
        s.masked = false;
        s.unmasks += 1;
        Ok(())
    }

    fn wake_fd(&self) -> Option<RawFd> {
        None
    }

    fn map_dma(&mut self, window: &dbt::DmaWindow) -> Result<(), String> {
        self.0.borrow_mut().window = Some((window.phys(), window.size()));
        Ok(())
    }

    fn poll(&mut self, dma: &mut dyn Dma) {
        let s = &mut *self.0.borrow_mut();
        let mut iommu = Iommu {
            dma,
            window: s.window,
            faults: &mut s.faults,
        };
        s.model.poll(&mut iommu);
    }
}
