//! A PCI bus of software device models and VFIO-backed functions, in the rust-vmm style: devices
//! sit behind the [`PciDevice`] trait and the bus routes guest port I/O and memory (MMIO) accesses
//! by address range to whichever device's BAR claims it, never knowing device types. Attaching a
//! device assigns its BARs (I/O ports from [`IO_START`] up, memory from [`MMIO_START`] up, each
//! aligned to its size) and an interrupt line, and programs them into its configuration space the
//! way firmware would (a VFIO function keeps these guest-side addresses in its virtual BARs).
//!
//! [`SharedPciBus`] is the handle a [`dbt::Machine`] takes as its [`dbt::PortIo`] and its
//! [`dbt::Mmio`] (guest pages mapped as MMIO stand for bus addresses, which the bus decodes here;
//! what no enabled memory BAR claims reads as all ones and ignores writes, like a real bus);
//! [`GuestDma`] lets devices reach guest memory (at guest-physical addresses).

use std::cell::RefCell;
use std::rc::Rc;

use crate::device::{
    access_mask, Bar, BarKind, Dma, DmaError, PciDevice, CMD_BUS_MASTER, CMD_IO, CMD_MEMORY,
};

/// First I/O port the allocator hands out.
pub const IO_START: u16 = 0xC000;
/// First memory BAR address the allocator hands out: below the X86 guest window
/// (0xC000_0000..4 GiB) and far from the X64 one, so MMIO never aliases guest RAM.
pub const MMIO_START: u64 = 0x8000_0000;
/// Interrupt lines given to devices in attach order (shared once they run out; INTx is level
/// triggered, so sharing is legal).
pub const IRQ_LINES: [u32; 4] = [11, 10, 9, 5];

/// One BAR and where it was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarAssignment {
    pub bar: Bar,
    /// Port number (I/O) or bus address (memory).
    pub base: u64,
}

/// What a device was given: its slot on the bus, BAR placements and interrupt line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciResources {
    /// Index of the device on the bus (its device number).
    pub slot: usize,
    pub bars: Vec<BarAssignment>,
    pub irq: u32,
}

impl PciResources {
    /// The I/O port BARs as (first port, length).
    pub fn io_ranges(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        self.bars
            .iter()
            .filter(|b| b.bar.kind == BarKind::Io)
            .map(|b| (b.base as u16, b.bar.size as u16))
    }

    /// The memory BARs as (bus address, length).
    pub fn mmio_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.bars
            .iter()
            .filter(|b| b.bar.kind == BarKind::Mmio)
            .map(|b| (b.base, b.bar.size))
    }

    /// First port of the first I/O BAR, if the device has one.
    pub fn io_base(&self) -> Option<u16> {
        self.io_ranges().next().map(|(base, _)| base)
    }
}

struct Slot {
    dev: Box<dyn PciDevice>,
    res: PciResources,
}

/// An I/O port range decoded by one BAR of one device.
#[derive(Debug, Clone, Copy)]
struct IoRange {
    start: u32,
    end: u32,
    slot: usize,
    bar: usize,
}

/// A bus address range decoded by one memory BAR of one device.
#[derive(Debug, Clone, Copy)]
struct MmioRange {
    start: u64,
    end: u64,
    slot: usize,
    bar: usize,
}

/// The bus: devices, their resources, and the port and memory decode tables.
pub struct PciBus {
    slots: Vec<Slot>,
    io: Vec<IoRange>,
    mmio: Vec<MmioRange>,
    next_io: u32,
    next_mmio: u64,
    /// Whether an access to an undecoded bus address was reported already.
    warned_unclaimed: bool,
}

impl Default for PciBus {
    fn default() -> Self {
        Self::new()
    }
}

fn align_up(v: u64, align: u64) -> u64 {
    (v + align - 1) & !(align - 1)
}

impl PciBus {
    pub fn new() -> PciBus {
        PciBus {
            slots: Vec::new(),
            io: Vec::new(),
            mmio: Vec::new(),
            next_io: IO_START as u32,
            next_mmio: MMIO_START,
            warned_unclaimed: false,
        }
    }

    /// Plugs a device in: assigns its BARs and interrupt line, programs them into its config
    /// space and enables I/O, memory decode and bus mastering (what firmware does at boot).
    ///
    /// # Panics
    /// When the I/O port space is exhausted.
    pub fn attach(&mut self, mut dev: Box<dyn PciDevice>) -> PciResources {
        let slot = self.slots.len();
        let irq = IRQ_LINES[slot % IRQ_LINES.len()];
        let mut bars = Vec::new();
        for bar in dev.bars() {
            let base = match bar.kind {
                BarKind::Io => {
                    let base = align_up(self.next_io as u64, bar.size);
                    assert!(base + bar.size <= 0x1_0000, "I/O port space exhausted");
                    self.next_io = (base + bar.size) as u32;
                    base
                }
                BarKind::Mmio => {
                    let base = align_up(self.next_mmio, bar.size);
                    self.next_mmio = base + bar.size;
                    base
                }
            };
            let flags = if bar.kind == BarKind::Io { 1 } else { 0 };
            dev.config_write(0x10 + 4 * bar.index as u16, 4, base as u32 | flags);
            bars.push(BarAssignment { bar, base });
        }
        dev.config_write(0x3C, 1, irq);
        let cmd = dev.config_read(0x04, 2) as u16 | CMD_IO | CMD_MEMORY | CMD_BUS_MASTER;
        dev.config_write(0x04, 2, cmd as u32);
        let res = PciResources { slot, bars, irq };
        self.slots.push(Slot {
            dev,
            res: res.clone(),
        });
        self.rebuild_decode();
        res
    }

    /// Number of devices on the bus.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The resources of the device in `slot`.
    pub fn resources(&self, slot: usize) -> Option<&PciResources> {
        self.slots.get(slot).map(|s| &s.res)
    }

    /// The device in `slot`.
    pub fn device(&mut self, slot: usize) -> Option<&mut (dyn PciDevice + 'static)> {
        self.slots.get_mut(slot).map(|s| s.dev.as_mut())
    }

    /// Configuration read of the device in `slot` (all ones for an empty slot).
    pub fn config_read(&mut self, slot: usize, offset: u16, size: u8) -> u32 {
        match self.slots.get_mut(slot) {
            Some(s) => s.dev.config_read(offset, size),
            None => access_mask(size) as u32,
        }
    }

    /// Configuration write to the device in `slot`; reprogramming a BAR or the command register
    /// updates the port and memory decode.
    pub fn config_write(&mut self, slot: usize, offset: u16, size: u8, value: u32) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        s.dev.config_write(offset, size, value);
        let end = offset + size as u16;
        let touches = |lo: u16, hi: u16| offset < hi && end > lo;
        if touches(0x04, 0x06) || touches(0x10, 0x28) {
            self.rebuild_decode();
        }
    }

    /// Recomputes the decode tables from each device's config space: I/O BARs of devices with
    /// I/O decode enabled, memory BARs of devices with memory decode enabled.
    fn rebuild_decode(&mut self) {
        self.io.clear();
        self.mmio.clear();
        for (i, s) in self.slots.iter_mut().enumerate() {
            let cmd = s.dev.config_read(0x04, 2) as u16;
            for a in s.res.bars.iter_mut() {
                let v = s.dev.config_read(0x10 + 4 * a.bar.index as u16, 4);
                let base = match a.bar.kind {
                    BarKind::Io => (v & !3) as u64,
                    BarKind::Mmio => (v & !0xF) as u64,
                };
                a.base = base;
                if base == 0 {
                    continue;
                }
                match a.bar.kind {
                    BarKind::Io if cmd & CMD_IO != 0 && base + a.bar.size <= 0x1_0000 => {
                        self.io.push(IoRange {
                            start: base as u32,
                            end: (base + a.bar.size) as u32,
                            slot: i,
                            bar: a.bar.index as usize,
                        });
                    }
                    BarKind::Mmio if cmd & CMD_MEMORY != 0 => {
                        self.mmio.push(MmioRange {
                            start: base,
                            end: base + a.bar.size,
                            slot: i,
                            bar: a.bar.index as usize,
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    fn decode(&self, port: u16) -> Option<IoRange> {
        let p = port as u32;
        self.io.iter().copied().find(|r| p >= r.start && p < r.end)
    }

    /// Guest `in`: routed to the owning device's BAR; unclaimed ports read all ones.
    pub fn io_read(&mut self, port: u16, size: u8) -> u32 {
        match self.decode(port) {
            Some(r) => {
                let off = (port as u32 - r.start) as u64;
                self.slots[r.slot].dev.bar_read(r.bar, off, size) as u32 & access_mask(size) as u32
            }
            None => access_mask(size) as u32,
        }
    }

    /// Guest `out`: routed to the owning device's BAR; unclaimed ports ignore it.
    pub fn io_write(&mut self, port: u16, size: u8, value: u32) {
        if let Some(r) = self.decode(port) {
            let off = (port as u32 - r.start) as u64;
            let v = value as u64 & access_mask(size);
            self.slots[r.slot].dev.bar_write(r.bar, off, size, v);
        }
    }

    fn decode_mmio(&self, addr: u64) -> Option<MmioRange> {
        self.mmio
            .iter()
            .copied()
            .find(|r| addr >= r.start && addr < r.end)
    }

    /// Reports the first access to a bus address no memory BAR claims.
    fn unclaimed(&mut self, addr: u64, write: bool) {
        let what = if write { "write to" } else { "read of" };
        if !self.warned_unclaimed {
            self.warned_unclaimed = true;
            tracing::warn!(
                "MMIO {what} bus address {addr:#x} that no device decodes: reads as all ones, \
                 writes are ignored (further such accesses are logged at debug level)"
            );
        } else {
            tracing::debug!("MMIO {what} undecoded bus address {addr:#x}");
        }
    }

    /// Guest load from a memory-mapped bus address: routed to the memory BAR claiming it; an
    /// address nothing claims reads all ones.
    pub fn mmio_read(&mut self, addr: u64, size: u8) -> u64 {
        match self.decode_mmio(addr) {
            Some(r) => {
                let off = addr - r.start;
                self.slots[r.slot].dev.bar_read(r.bar, off, size) & access_mask(size)
            }
            None => {
                self.unclaimed(addr, false);
                access_mask(size)
            }
        }
    }

    /// Guest store to a memory-mapped bus address: routed to the memory BAR claiming it; an
    /// address nothing claims ignores it.
    pub fn mmio_write(&mut self, addr: u64, size: u8, value: u64) {
        match self.decode_mmio(addr) {
            Some(r) => {
                let off = addr - r.start;
                let v = value & access_mask(size);
                self.slots[r.slot].dev.bar_write(r.bar, off, size, v);
            }
            None => self.unclaimed(addr, true),
        }
    }

    /// Interrupt lines currently asserted, ascending, each once.
    pub fn asserted_irqs(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .slots
            .iter()
            .filter(|s| s.dev.interrupt_pending())
            .map(|s| s.res.irq)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Lets every device do its DMA and backend work; returns the interrupt lines asserted after.
    pub fn poll(&mut self, dma: &mut dyn Dma) -> Vec<u32> {
        for s in &mut self.slots {
            s.dev.poll(dma);
        }
        self.asserted_irqs()
    }

    /// The guest handled an interrupt on `line`: every device on it is told
    /// ([`PciDevice::end_of_interrupt`]; VFIO devices unmask their INTx).
    pub fn end_of_interrupt(&mut self, line: u32) {
        for s in self.slots.iter_mut().filter(|s| s.res.irq == line) {
            s.dev.end_of_interrupt();
        }
    }

    /// The wake descriptors of the devices ([`PciDevice::wake_fd`]).
    pub fn wake_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.slots.iter().filter_map(|s| s.dev.wake_fd()).collect()
    }
}

/// A shareable handle to a [`PciBus`]: clones go to the machine as its port I/O and its MMIO
/// backend, the host keeps another to poll devices and read resources.
#[derive(Clone, Default)]
pub struct SharedPciBus(pub Rc<RefCell<PciBus>>);

impl SharedPciBus {
    pub fn new(bus: PciBus) -> SharedPciBus {
        SharedPciBus(Rc::new(RefCell::new(bus)))
    }

    /// See [`PciBus::attach`].
    pub fn attach(&self, dev: Box<dyn PciDevice>) -> PciResources {
        self.0.borrow_mut().attach(dev)
    }

    /// See [`PciBus::poll`].
    pub fn poll(&self, dma: &mut dyn Dma) -> Vec<u32> {
        self.0.borrow_mut().poll(dma)
    }

    /// See [`PciBus::end_of_interrupt`].
    pub fn end_of_interrupt(&self, line: u32) {
        self.0.borrow_mut().end_of_interrupt(line)
    }

    /// Runs `f` on the bus.
    pub fn with<R>(&self, f: impl FnOnce(&mut PciBus) -> R) -> R {
        f(&mut self.0.borrow_mut())
    }
}

impl dbt::PortIo for SharedPciBus {
    fn port_read(&mut self, port: u16, size: u8) -> u32 {
        self.0.borrow_mut().io_read(port, size)
    }

    fn port_write(&mut self, port: u16, size: u8, value: u32) {
        self.0.borrow_mut().io_write(port, size, value)
    }
}

impl dbt::Mmio for SharedPciBus {
    fn mmio_read(&mut self, addr: u64, size: u8) -> u64 {
        self.0.borrow_mut().mmio_read(addr, size)
    }

    fn mmio_write(&mut self, addr: u64, size: u8, value: u64) {
        self.0.borrow_mut().mmio_write(addr, size, value)
    }
}

/// Bus-master access to guest memory: bus addresses are guest-physical addresses, translated
/// with [`dbt::GuestMemory::phys_to_virt`] (the mapping MmGetPhysicalAddress reports). An address
/// outside guest memory or unmapped is a [`DmaError`], never a host fault. Writes bypass page protection as a bus master would; they do not drop translated code
/// (DMA into code pages is not supported).
pub struct GuestDma<'a> {
    pub mem: &'a mut dbt::GuestMemory,
}

impl<'a> GuestDma<'a> {
    pub fn new(mem: &'a mut dbt::GuestMemory) -> GuestDma<'a> {
        GuestDma { mem }
    }
}

impl Dma for GuestDma<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        let fault = DmaError {
            addr,
            len: buf.len(),
        };
        let va = self.mem.phys_to_virt(addr).ok_or(fault)?;
        self.mem.read_bytes(va, buf).map_err(|_| fault)
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), DmaError> {
        let fault = DmaError {
            addr,
            len: data.len(),
        };
        let va = self.mem.phys_to_virt(addr).ok_or(fault)?;
        self.mem.write_bytes(va, data).map_err(|_| fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{ConfigHeader, ConfigSpace};

    /// One BAR access: BAR number, offset, size, the value written (`None` for a read).
    type Access = (usize, u64, u8, Option<u64>);

    /// A device with one 16-byte memory BAR (number 2) that logs its register accesses.
    struct Regs {
        config: ConfigSpace,
        log: Rc<RefCell<Vec<Access>>>,
    }

    impl PciDevice for Regs {
        fn config_read(&mut self, offset: u16, size: u8) -> u32 {
            self.config.read(offset, size)
        }
        fn config_write(&mut self, offset: u16, size: u8, value: u32) {
            self.config.write(offset, size, value)
        }
        fn bars(&self) -> Vec<Bar> {
            self.config.bars()
        }
        fn bar_read(&mut self, bar: usize, offset: u64, size: u8) -> u64 {
            self.log.borrow_mut().push((bar, offset, size, None));
            0xDEAD_BEEF_0BAD_F00D
        }
        fn bar_write(&mut self, bar: usize, offset: u64, size: u8, value: u64) {
            self.log.borrow_mut().push((bar, offset, size, Some(value)));
        }
        fn interrupt_pending(&self) -> bool {
            false
        }
        fn poll(&mut self, _dma: &mut dyn Dma) {}
    }

    fn regs() -> (Box<Regs>, Rc<RefCell<Vec<Access>>>) {
        let mut config = ConfigSpace::new(ConfigHeader {
            vendor: 0x1234,
            device: 0x5678,
            class: 0,
            revision: 0,
            subsystem_vendor: 0,
            subsystem: 0,
            interrupt_pin: 0,
        });
        config.add_bar(Bar {
            index: 2,
            kind: BarKind::Mmio,
            size: 16,
        });
        let log = Rc::default();
        let dev = Regs {
            config,
            log: Rc::clone(&log),
        };
        (Box::new(dev), log)
    }

    #[test]
    fn mmio_routes_by_memory_bar_and_floats_high_elsewhere() {
        let mut bus = PciBus::new();
        let (first, first_log) = regs();
        let (second, second_log) = regs();
        bus.attach(first);
        let res = bus.attach(second);
        let (base, len) = res.mmio_ranges().next().unwrap();
        assert_eq!((base, len), (MMIO_START + 16, 16));
        assert_eq!(bus.mmio_read(base + 4, 2), 0xF00D);
        bus.mmio_write(base + 8, 4, 0x1_2345_6789);
        assert!(!bus.warned_unclaimed);
        assert_eq!(bus.mmio_read(base + 16 * 5, 4), 0xFFFF_FFFF);
        assert!(bus.warned_unclaimed);
        bus.mmio_write(MMIO_START - 8, 8, 1);
        assert_eq!(bus.mmio_read(MMIO_START - 8, 8), u64::MAX);
        // Only the second device saw the accesses in its BAR, with BAR-relative offsets.
        assert!(first_log.borrow().is_empty());
        assert_eq!(
            *second_log.borrow(),
            vec![(2, 4, 2, None), (2, 8, 4, Some(0x2345_6789))]
        );
        // Memory decode off: the BAR stops answering.
        bus.config_write(1, 0x04, 2, 0);
        assert_eq!(bus.mmio_read(base + 4, 1), 0xFF);
        assert_eq!(second_log.borrow().len(), 2);
    }
}
