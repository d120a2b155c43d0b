//! The PCI device abstraction the dispatcher talks to: one trait for every PCI function, a
//! software model or real hardware through VFIO (config space, BAR registers, an interrupt line,
//! DMA through the [`Dma`] trait), in the rust-vmm style where the bus routes by address range
//! and never knows device types. Also a standard type-0
//! configuration space helper that models reuse, and a flat memory implementing [`Dma`].

/// What a base address register decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// Port I/O space.
    Io,
    /// 32-bit, non-prefetchable memory space.
    Mmio,
}

/// One base address register of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    /// BAR number, 0..=5.
    pub index: u8,
    pub kind: BarKind,
    /// Size in bytes: a power of two (at least 4 for I/O, 16 for memory).
    pub size: u64,
}

/// A DMA access outside the memory the device may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaError {
    pub addr: u64,
    pub len: usize,
}

impl std::fmt::Display for DmaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DMA fault at {:#x} ({} bytes)", self.addr, self.len)
    }
}

impl std::error::Error for DmaError {}

/// Bus-master access to memory, seen from the device: bus addresses in, bytes out. The driver host
/// implements it over the memory it gives the driver.
pub trait Dma {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), DmaError>;
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), DmaError>;
}

/// A PCI function: modelled in software, or real hardware behind VFIO
/// ([`crate::vfio::VfioPciDevice`]). Sizes are 1, 2 or 4 bytes (8 for 64-bit BAR accesses);
/// offsets inside a BAR are relative to its start.
///
/// Register accesses arrive through [`bar_read`](Self::bar_read) / [`bar_write`](Self::bar_write)
/// whatever the BAR decodes: the bus calls them for guest port I/O to an I/O BAR and for guest
/// MMIO (loads and stores on pages mapped to the bus address) to a memory BAR, in program order,
/// one call per guest access.
pub trait PciDevice {
    fn config_read(&mut self, offset: u16, size: u8) -> u32;
    fn config_write(&mut self, offset: u16, size: u8, value: u32);
    /// The BARs the function implements.
    fn bars(&self) -> Vec<Bar>;
    /// Reads `size` bytes at `offset` of BAR number `bar` (port I/O or MMIO); only the low `size`
    /// bytes of the result are used.
    fn bar_read(&mut self, bar: usize, offset: u64, size: u8) -> u64;
    /// Writes the low `size` bytes of `value` at `offset` of BAR number `bar` (port I/O or MMIO).
    fn bar_write(&mut self, bar: usize, offset: u64, size: u8, value: u64);
    /// Level of the INTx line.
    fn interrupt_pending(&self) -> bool;
    /// Lets the device do work that needs memory (DMA) or its backend: transmit queued frames,
    /// receive pending ones. Called by the dispatcher after register writes and when the backend
    /// has data.
    fn poll(&mut self, dma: &mut dyn Dma);
    /// The guest finished handling an interrupt on this device's line (its ISR and the DPC it
    /// queued ran): a device whose line is masked when it fires (VFIO INTx) unmasks it here. A
    /// model's line is its register state, so by default nothing happens.
    fn end_of_interrupt(&mut self) {}
    /// A descriptor that becomes readable when the device wants service without the host having
    /// touched it (a hardware interrupt), for the host's poll loop; None by default.
    fn wake_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

/// All ones in the low `size` bytes of an access (1, 2, 4; anything else: 8): what a read from
/// nothing returns, and the bits a write of that size carries.
pub fn access_mask(size: u8) -> u64 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        4 => 0xFFFF_FFFF,
        _ => u64::MAX,
    }
}

/// Identity of a type-0 function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigHeader {
    pub vendor: u16,
    pub device: u16,
    /// Base class, subclass, programming interface (`0x020000`: Ethernet).
    pub class: u32,
    pub revision: u8,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
    /// 1 = INTA# .. 4 = INTD#, 0 = none.
    pub interrupt_pin: u8,
}

/// Command register bits.
pub const CMD_IO: u16 = 1 << 0;
pub const CMD_MEMORY: u16 = 1 << 1;
pub const CMD_BUS_MASTER: u16 = 1 << 2;
pub const CMD_INTX_DISABLE: u16 = 1 << 10;
/// Status register: interrupt status.
pub const STATUS_INTERRUPT: u16 = 1 << 3;

/// A standard type-0 configuration space: 256 bytes, with a per-byte mask of what software may
/// write. BARs answer sizing writes of all ones with their size mask.
#[derive(Debug, Clone)]
pub struct ConfigSpace {
    bytes: [u8; 256],
    writable: [u8; 256],
    bars: Vec<Bar>,
}

impl ConfigSpace {
    pub fn new(h: ConfigHeader) -> ConfigSpace {
        let mut c = ConfigSpace {
            bytes: [0; 256],
            writable: [0; 256],
            bars: Vec::new(),
        };
        c.put(0x00, 2, h.vendor as u32);
        c.put(0x02, 2, h.device as u32);
        c.put(0x08, 1, h.revision as u32);
        c.put(0x09, 3, h.class & 0x00FF_FFFF);
        c.put(0x2C, 2, h.subsystem_vendor as u32);
        c.put(0x2E, 2, h.subsystem as u32);
        c.put(0x3D, 1, h.interrupt_pin as u32);
        let cmd_mask =
            CMD_IO | CMD_MEMORY | CMD_BUS_MASTER | (1 << 6) | (1 << 8) | CMD_INTX_DISABLE;
        c.writable[0x04] = cmd_mask as u8;
        c.writable[0x05] = (cmd_mask >> 8) as u8;
        c.writable[0x0C] = 0xFF; // cache line size
        c.writable[0x0D] = 0xFF; // latency timer
        c.writable[0x3C] = 0xFF; // interrupt line
        c
    }

    /// Declares a BAR; its address bits become writable.
    pub fn add_bar(&mut self, bar: Bar) {
        assert!(bar.index < 6 && bar.size.is_power_of_two());
        let off = 0x10 + 4 * bar.index as usize;
        let (flags, min) = match bar.kind {
            BarKind::Io => (1u32, 4),
            BarKind::Mmio => (0u32, 16),
        };
        assert!(bar.size >= min && bar.size <= 1 << 31);
        let mask = !((bar.size as u32) - 1);
        self.put(off as u16, 4, flags);
        self.writable[off..off + 4].copy_from_slice(&mask.to_le_bytes());
        self.bars.push(bar);
    }

    pub fn bars(&self) -> Vec<Bar> {
        self.bars.clone()
    }

    /// The address a BAR is currently programmed to (flag bits removed).
    pub fn bar_address(&self, index: usize) -> u64 {
        let off = 0x10 + 4 * index;
        let v = self.get(off as u16, 4);
        if v & 1 != 0 {
            (v & !3) as u64
        } else {
            (v & !0xF) as u64
        }
    }

    pub fn command(&self) -> u16 {
        self.get(0x04, 2) as u16
    }

    /// Updates the interrupt status bit of the status register.
    pub fn set_interrupt_status(&mut self, on: bool) {
        let s = self.get(0x06, 2) as u16;
        let s = if on {
            s | STATUS_INTERRUPT
        } else {
            s & !STATUS_INTERRUPT
        };
        self.put(0x06, 2, s as u32);
    }

    fn put(&mut self, offset: u16, size: usize, value: u32) {
        for i in 0..size {
            self.bytes[offset as usize + i] = (value >> (8 * i)) as u8;
        }
    }

    fn get(&self, offset: u16, size: usize) -> u32 {
        (0..size).fold(0, |acc, i| {
            acc | (self.bytes[offset as usize + i] as u32) << (8 * i)
        })
    }

    /// Reads `size` bytes (1, 2, 4) at `offset`; out of range reads as ones.
    pub fn read(&self, offset: u16, size: u8) -> u32 {
        if offset as usize + size as usize > 256 {
            return u32::MAX;
        }
        self.get(offset, size as usize)
    }

    /// Writes through the writable mask; read-only bits keep their value.
    pub fn write(&mut self, offset: u16, size: u8, value: u32) {
        if offset as usize + size as usize > 256 {
            return;
        }
        for i in 0..size as usize {
            let o = offset as usize + i;
            let m = self.writable[o];
            let b = (value >> (8 * i)) as u8;
            self.bytes[o] = (self.bytes[o] & !m) | (b & m);
        }
    }
}

/// Flat memory at a bus address: a [`Dma`] for tests and simple hosts.
#[derive(Debug, Clone)]
pub struct VecMemory {
    pub base: u64,
    pub bytes: Vec<u8>,
}

impl VecMemory {
    pub fn new(base: u64, size: usize) -> VecMemory {
        VecMemory {
            base,
            bytes: vec![0; size],
        }
    }

    fn range(&self, addr: u64, len: usize) -> Result<std::ops::Range<usize>, DmaError> {
        let err = DmaError { addr, len };
        let start = addr.checked_sub(self.base).ok_or(err)? as usize;
        let end = start.checked_add(len).ok_or(err)?;
        if end > self.bytes.len() {
            return Err(err);
        }
        Ok(start..end)
    }

    pub fn slice(&self, addr: u64, len: usize) -> &[u8] {
        let r = self.range(addr, len).expect("address outside VecMemory");
        &self.bytes[r]
    }
}

impl Dma for VecMemory {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        let r = self.range(addr, buf.len())?;
        buf.copy_from_slice(&self.bytes[r]);
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), DmaError> {
        let r = self.range(addr, data.len())?;
        self.bytes[r].copy_from_slice(data);
        Ok(())
    }
}
