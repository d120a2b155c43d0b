//! The part of a passed-through function's configuration space ICA keeps to itself: the six base
//! address registers, the expansion ROM BAR and the interrupt line. The bus assigns guest-side
//! BAR addresses the way it does for models and sizing writes answer the real size mask, but
//! nothing of it reaches the device, so the guest never reprograms the real BARs (the host's
//! firmware placed them; VFIO maps them for us). Every other register goes to the device.

use crate::device::{Bar, BarKind};

/// One implemented BAR of the real function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarInfo {
    pub bar: Bar,
    /// The read-only low bits of the register as the device reports them: 1 for I/O; for memory
    /// the type (bit 2 set: 64-bit, which also takes the next register) and prefetchable bits.
    pub flags: u32,
}

impl BarInfo {
    /// Whether the BAR is a 64-bit memory BAR (its upper half is register `index + 1`).
    pub fn is_64bit(&self) -> bool {
        self.bar.kind == BarKind::Mmio && self.flags & 0b110 == 0b100
    }
}

/// Decodes the BARs of a function from its six BAR registers (the flag bits) and the sizes VFIO
/// reports for BAR regions 0..=5 (0: not implemented). Sizes are rounded up to a power of two of
/// at least 4 (I/O) or 16 (memory) bytes, as the register's size mask has them.
pub fn decode_bars(regs: [u32; 6], sizes: [u64; 6]) -> Vec<BarInfo> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < 6 {
        let (reg, size) = (regs[i], sizes[i]);
        let io = reg & 1 != 0;
        let info = BarInfo {
            bar: Bar {
                index: i as u8,
                kind: if io { BarKind::Io } else { BarKind::Mmio },
                size: size.next_power_of_two().max(if io { 4 } else { 16 }),
            },
            flags: if io { 1 } else { reg & 0xF },
        };
        let wide = info.is_64bit();
        if size != 0 && !(wide && i == 5) {
            out.push(info);
        }
        i += if wide { 2 } else { 1 };
    }
    out
}

/// Configuration bytes below this offset may be virtual.
const END: usize = 0x40;

/// Whether configuration byte `offset` is virtual: BARs, expansion ROM BAR, interrupt line.
fn is_virtual(offset: usize) -> bool {
    matches!(offset, 0x10..=0x27 | 0x30..=0x33 | 0x3C)
}

/// A write (offset, size, value) the device itself receives.
pub type RealWrite = (u16, u8, u32);

/// The virtual registers: their bytes and which bits software may write.
#[derive(Debug, Clone)]
pub struct VirtualConfig {
    value: [u8; END],
    writable: [u8; END],
}

impl VirtualConfig {
    /// Registers for `bars`: each BAR reads its flags and address 0 until the bus assigns one,
    /// unimplemented BARs and the expansion ROM read 0 (no ROM is offered), the interrupt line is
    /// a plain byte.
    pub fn new(bars: &[BarInfo]) -> VirtualConfig {
        let mut c = VirtualConfig {
            value: [0; END],
            writable: [0; END],
        };
        c.writable[0x3C] = 0xFF;
        for b in bars {
            let off = 0x10 + 4 * b.bar.index as usize;
            let low_bits = if b.bar.kind == BarKind::Io { 0x3 } else { 0xF };
            let mask = !(b.bar.size.wrapping_sub(1) as u32) & !low_bits;
            c.value[off..off + 4].copy_from_slice(&b.flags.to_le_bytes());
            c.writable[off..off + 4].copy_from_slice(&mask.to_le_bytes());
            if b.is_64bit() {
                let high = !(b.bar.size.wrapping_sub(1) >> 32) as u32;
                c.writable[off + 4..off + 8].copy_from_slice(&high.to_le_bytes());
            }
        }
        c
    }

    /// Which bytes of the access (bit i: byte `offset + i`) are virtual.
    pub fn virtual_bytes(offset: u16, size: u8) -> u8 {
        (0..size)
            .filter(|i| is_virtual(offset as usize + *i as usize))
            .fold(0, |m, i| m | 1 << i)
    }

    /// A read of `size` bytes at `offset`: the virtual bytes from here, the others from `real`
    /// (what the device answered for the same access; unused if every byte is virtual).
    pub fn read(&self, offset: u16, size: u8, real: u32) -> u32 {
        let virt = Self::virtual_bytes(offset, size);
        (0..size as usize).fold(0, |acc, i| {
            let byte = if virt & (1 << i) != 0 {
                self.value[offset as usize + i]
            } else {
                (real >> (8 * i)) as u8
            };
            acc | (byte as u32) << (8 * i)
        })
    }

    /// A write of `size` bytes at `offset`: virtual bytes are updated through their writable
    /// mask; returns the writes of the other bytes that go to the device, as naturally aligned
    /// accesses of 1, 2 or 4 bytes in ascending order.
    pub fn write(&mut self, offset: u16, size: u8, value: u32) -> Vec<RealWrite> {
        let virt = Self::virtual_bytes(offset, size);
        let mut real = Vec::new();
        let mut i = 0u8;
        while i < size {
            let o = offset as usize + i as usize;
            let byte = (value >> (8 * i)) as u8;
            if virt & (1 << i) != 0 {
                let m = self.writable[o];
                self.value[o] = (self.value[o] & !m) | (byte & m);
                i += 1;
                continue;
            }
            // The longest aligned run of real bytes starting here (4, 2 or 1 bytes).
            let run = [4u8, 2, 1]
                .into_iter()
                .find(|&n| {
                    o.is_multiple_of(n as usize)
                        && i + n <= size
                        && (i..i + n).all(|j| virt & (1 << j) == 0)
                })
                .unwrap_or(1);
            let v = (value >> (8 * i)) & (u32::MAX >> (32 - 8 * run as u32));
            real.push((o as u16, run, v));
            i += run;
        }
        real
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(index: u8, kind: BarKind, size: u64, flags: u32) -> BarInfo {
        BarInfo {
            bar: Bar { index, kind, size },
            flags,
        }
    }

    #[test]
    fn decodes_io_memory_and_64bit_bars() {
        // BAR0 I/O (256 bytes), BAR1 32-bit memory, BAR2+3 64-bit prefetchable memory, BAR4
        // unimplemented, BAR5 an odd-sized memory region.
        let regs = [
            0xE001,
            0xFEB0_0000,
            0xC000_000C,
            0x0000_0001,
            0,
            0xFEA0_0000,
        ];
        let sizes = [256, 4096, 1 << 20, 0, 0, 100];
        let bars = decode_bars(regs, sizes);
        assert_eq!(
            bars,
            vec![
                bar(0, BarKind::Io, 256, 1),
                bar(1, BarKind::Mmio, 4096, 0),
                bar(2, BarKind::Mmio, 1 << 20, 0xC),
                bar(5, BarKind::Mmio, 128, 0),
            ]
        );
        assert!(bars[2].is_64bit() && !bars[1].is_64bit() && !bars[0].is_64bit());
        // A 64-bit BAR cannot start at register 5.
        assert!(decode_bars([0, 0, 0, 0, 0, 0x4], [0, 0, 0, 0, 0, 4096]).is_empty());
    }

    #[test]
    fn bars_size_and_program_without_reaching_the_device() {
        let bars = [
            bar(0, BarKind::Io, 256, 1),
            bar(2, BarKind::Mmio, 1 << 20, 0xC),
        ];
        let mut c = VirtualConfig::new(&bars);
        // Nothing of a BAR write reaches the device.
        assert!(c.write(0x10, 4, 0xFFFF_FFFF).is_empty());
        assert_eq!(c.read(0x10, 4, 0xDEAD_BEEF), 0xFFFF_FF01);
        assert!(c.write(0x10, 4, 0xC001).is_empty());
        assert_eq!(c.read(0x10, 4, 0), 0xC001);
        assert_eq!(c.read(0x10, 2, 0), 0xC001);
        assert_eq!(c.read(0x11, 1, 0), 0xC0);
        // 64-bit memory BAR: the low half sizes to the 1 MiB mask with its flags, the high half
        // (size < 4 GiB) takes any value.
        assert!(c.write(0x18, 4, 0xFFFF_FFFF).is_empty());
        assert_eq!(c.read(0x18, 4, 0), 0xFFF0_000C);
        c.write(0x1C, 4, 0xFFFF_FFFF);
        assert_eq!(c.read(0x1C, 4, 0), 0xFFFF_FFFF);
        c.write(0x18, 4, 0x8000_0000);
        c.write(0x1C, 4, 0);
        assert_eq!(c.read(0x18, 4, 0), 0x8000_000C);
        // Unimplemented BARs and the ROM read 0 whatever is written.
        assert!(c.write(0x14, 4, 0xFFFF_FFFF).is_empty());
        assert_eq!(c.read(0x14, 4, 0x1234_5678), 0);
        assert!(c.write(0x30, 4, 0xFFFF_FFFF).is_empty());
        assert_eq!(c.read(0x30, 4, 0x1234_5678), 0);
    }

    #[test]
    fn other_registers_pass_through_and_mixed_accesses_split() {
        let mut c = VirtualConfig::new(&[]);
        assert_eq!(c.write(0x04, 2, 0x0007), vec![(0x04, 2, 0x0007)]);
        assert_eq!(c.write(0x0C, 4, 0x1122_3344), vec![(0x0C, 4, 0x1122_3344)]);
        assert_eq!(c.read(0x00, 4, 0x8139_10EC), 0x8139_10EC);
        // Interrupt line (virtual) + pin, min grant, max latency (the device's).
        assert_eq!(
            c.write(0x3C, 4, 0x1234_010B),
            vec![(0x3D, 1, 0x01), (0x3E, 2, 0x1234)]
        );
        assert_eq!(c.read(0x3C, 4, 0x1234_01FF), 0x1234_010B);
        assert_eq!(c.read(0x3C, 1, 0xFF), 0x0B);
        // A byte-wise write across the boundary at 0x10 (cache line .. BIST | BAR0).
        assert_eq!(c.write(0x0E, 4, 0xAABB_CCDD), vec![(0x0E, 2, 0xCCDD)]);
        assert_eq!(VirtualConfig::virtual_bytes(0x0E, 4), 0b1100);
        assert_eq!(VirtualConfig::virtual_bytes(0x04, 4), 0);
        assert_eq!(VirtualConfig::virtual_bytes(0x3C, 4), 0b0001);
    }
}
