//! Software model of the Realtek RTL8139 (C) Fast Ethernet controller, written from the public
//! datasheet: the 256-byte register file (BAR0 I/O and BAR1 memory decode the same registers),
//! four transmit descriptors, the receive ring in host memory, the interrupt registers and the
//! PHY registers a driver reads for link state. Frames go to and come from a [`PacketPort`].

use crate::device::{Bar, BarKind, ConfigHeader, ConfigSpace, Dma, PciDevice, CMD_INTX_DISABLE};
use crate::packet::PacketPort;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The network cable of a device model, shared so the host can unplug and replug it while the
/// device sits on the bus; the device notices at its next poll.
#[derive(Debug, Clone)]
pub struct Cable(Arc<AtomicBool>);

impl Cable {
    /// A cable, plugged in or not.
    pub fn new(connected: bool) -> Cable {
        Cable(Arc::new(AtomicBool::new(connected)))
    }

    /// Plugs the cable in (true) or pulls it (false).
    pub fn plug(&self, connected: bool) {
        self.0.store(connected, Ordering::SeqCst);
    }

    /// Whether the cable is plugged in.
    pub fn connected(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

pub const VENDOR_REALTEK: u16 = 0x10EC;
pub const DEVICE_RTL8139: u16 = 0x8139;
/// Revision ID of the modelled chip (an RTL8139C).
pub const REVISION: u8 = 0x10;

// Register offsets.
pub const IDR0: u16 = 0x00;
pub const MAR0: u16 = 0x08;
pub const TSD0: u16 = 0x10;
pub const TSAD0: u16 = 0x20;
pub const RBSTART: u16 = 0x30;
pub const ERBCR: u16 = 0x34;
pub const ERSR: u16 = 0x36;
pub const CR: u16 = 0x37;
pub const CAPR: u16 = 0x38;
pub const CBR: u16 = 0x3A;
pub const IMR: u16 = 0x3C;
pub const ISR: u16 = 0x3E;
pub const TCR: u16 = 0x40;
pub const RCR: u16 = 0x44;
pub const TCTR: u16 = 0x48;
pub const MPC: u16 = 0x4C;
pub const CR9346: u16 = 0x50;
pub const CONFIG0: u16 = 0x51;
pub const CONFIG1: u16 = 0x52;
pub const MSR: u16 = 0x58;
pub const CONFIG3: u16 = 0x59;
pub const CONFIG4: u16 = 0x5A;
pub const TSAD_SUMMARY: u16 = 0x60;
pub const BMCR: u16 = 0x62;
pub const BMSR: u16 = 0x64;
pub const ANAR: u16 = 0x66;
pub const ANLPAR: u16 = 0x68;
pub const CONFIG5: u16 = 0xD8;

// CR bits.
pub const CR_BUFE: u8 = 1 << 0;
pub const CR_TE: u8 = 1 << 2;
pub const CR_RE: u8 = 1 << 3;
pub const CR_RST: u8 = 1 << 4;

// ISR / IMR bits.
pub const INT_ROK: u16 = 1 << 0;
pub const INT_RER: u16 = 1 << 1;
pub const INT_TOK: u16 = 1 << 2;
pub const INT_TER: u16 = 1 << 3;
pub const INT_RXOVW: u16 = 1 << 4;
pub const INT_LINKCHG: u16 = 1 << 5;
pub const INT_FOVW: u16 = 1 << 6;
pub const INT_TIMEOUT: u16 = 1 << 14;
pub const INT_SERR: u16 = 1 << 15;

// TSD bits.
pub const TSD_SIZE_MASK: u32 = 0x1FFF;
pub const TSD_OWN: u32 = 1 << 13;
pub const TSD_TUN: u32 = 1 << 14;
pub const TSD_TOK: u32 = 1 << 15;
pub const TSD_TABT: u32 = 1 << 30;
/// Carrier sense lost during the transmission (no link: the frame went nowhere).
pub const TSD_CRS: u32 = 1 << 31;

// RCR bits.
pub const RCR_AAP: u32 = 1 << 0;
pub const RCR_APM: u32 = 1 << 1;
pub const RCR_AM: u32 = 1 << 2;
pub const RCR_AB: u32 = 1 << 3;
pub const RCR_AR: u32 = 1 << 4;
pub const RCR_WRAP: u32 = 1 << 7;
pub const RCR_RBLEN_SHIFT: u32 = 11;

// TCR bits.
pub const TCR_LOOPBACK: u32 = 3 << 17;
/// Hardware version bits of an RTL8139C.
pub const TCR_HWVER_8139C: u32 = 0x7400_0000;
const TCR_HWVER_MASK: u32 = 0x7CC0_0000;

// Receive packet header status bits.
pub const RX_ROK: u16 = 1 << 0;
pub const RX_BAR: u16 = 1 << 13;
pub const RX_PAM: u16 = 1 << 14;
pub const RX_MAR: u16 = 1 << 15;

// MSR bits.
pub const MSR_LINKB: u8 = 1 << 2;
pub const MSR_SPEED_10: u8 = 1 << 3;

// BMSR bits.
pub const BMSR_LINK: u16 = 1 << 2;
pub const BMSR_AN_COMPLETE: u16 = 1 << 5;

/// Ethernet CRC-32 (reflected, as transmitted on the wire; the frame check sequence).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The multicast hash bucket (0..64) of a destination address: the top six bits of the
/// big-endian CRC-32 of the address, as the MAR registers index it.
pub fn multicast_bucket(addr: &[u8; 6]) -> usize {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in addr {
        let mut b = byte;
        for _ in 0..8 {
            let carry = ((crc >> 31) ^ (b as u32 & 1)) != 0;
            crc <<= 1;
            b >>= 1;
            if carry {
                crc ^= 0x04C1_1DB7;
            }
        }
    }
    (crc >> 26) as usize
}

/// Counters the host can look at.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub tx_frames: u64,
    pub rx_frames: u64,
    /// Frames dropped because the receive ring was full.
    pub rx_overflow: u64,
    /// Frames the address filter rejected.
    pub rx_filtered: u64,
    /// Frames that arrived while the receiver was disabled.
    pub rx_disabled: u64,
    pub dma_errors: u64,
}

/// The RTL8139 model.
pub struct Rtl8139 {
    config: ConfigSpace,
    regs: [u8; 256],
    mac: [u8; 6],
    link_up: bool,
    cable: Cable,
    /// Descriptors the driver handed over, in the order it did.
    tx_pending: VecDeque<usize>,
    port: Box<dyn PacketPort + Send>,
    stats: Stats,
}

impl Rtl8139 {
    pub fn new(mac: [u8; 6], port: Box<dyn PacketPort + Send>) -> Rtl8139 {
        let mut config = ConfigSpace::new(ConfigHeader {
            vendor: VENDOR_REALTEK,
            device: DEVICE_RTL8139,
            class: 0x02_00_00,
            revision: REVISION,
            subsystem_vendor: VENDOR_REALTEK,
            subsystem: DEVICE_RTL8139,
            interrupt_pin: 1,
        });
        for bar in Self::BARS {
            config.add_bar(bar);
        }
        let mut dev = Rtl8139 {
            config,
            regs: [0; 256],
            mac,
            link_up: true,
            cable: Cable::new(true),
            tx_pending: VecDeque::new(),
            port,
            stats: Stats::default(),
        };
        dev.regs[..6].copy_from_slice(&mac);
        dev.reset();
        dev
    }

    const BARS: [Bar; 2] = [
        Bar {
            index: 0,
            kind: BarKind::Io,
            size: 256,
        },
        Bar {
            index: 1,
            kind: BarKind::Mmio,
            size: 256,
        },
    ];

    /// The factory address (what IDR0-5 hold after power-up).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// Plugs or unplugs the cable; a change raises the link-change interrupt.
    pub fn set_link(&mut self, up: bool) {
        self.cable.plug(up);
        self.follow_cable();
    }

    /// The device's cable, to plug and unplug from elsewhere.
    pub fn cable(&self) -> Cable {
        self.cable.clone()
    }

    /// Takes the link state from the cable; a change raises the link-change interrupt.
    fn follow_cable(&mut self) {
        let up = self.cable.connected();
        if up != self.link_up {
            self.link_up = up;
            self.raise(INT_LINKCHG);
        }
    }

    /// Software reset (CR.RST): everything but the station address and the configuration
    /// registers goes back to its default.
    fn reset(&mut self) {
        for o in 0x08..0x50 {
            self.regs[o] = 0;
        }
        for i in 0..4 {
            self.set32(TSD0 + 4 * i, TSD_OWN);
        }
        self.set16(CAPR, 0xFFF0);
        self.regs[CR as usize] = 0;
        self.set32(TCR, TCR_HWVER_8139C);
        self.set16(BMCR, 0x3100); // 100 Mb/s, autonegotiation, full duplex
        self.set16(ANAR, 0x01E1);
        self.tx_pending.clear();
    }

    fn get16(&self, o: u16) -> u16 {
        u16::from_le_bytes([self.regs[o as usize], self.regs[o as usize + 1]])
    }

    fn set16(&mut self, o: u16, v: u16) {
        self.regs[o as usize..o as usize + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn get32(&self, o: u16) -> u32 {
        let o = o as usize;
        u32::from_le_bytes(self.regs[o..o + 4].try_into().unwrap())
    }

    fn set32(&mut self, o: u16, v: u32) {
        self.regs[o as usize..o as usize + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn raise(&mut self, bits: u16) {
        let isr = self.get16(ISR) | bits;
        self.set16(ISR, isr);
        self.update_irq();
    }

    fn update_irq(&mut self) {
        let asserted = self.get16(ISR) & self.get16(IMR) != 0;
        self.config.set_interrupt_status(asserted);
    }

    fn ring_size(&self) -> u32 {
        8192 << ((self.get32(RCR) >> RCR_RBLEN_SHIFT) & 3)
    }

    /// Where the driver will read next: CAPR plus the 16-byte quirk, inside the ring.
    fn read_offset(&self) -> u32 {
        (self.get16(CAPR).wrapping_add(16) as u32) % self.ring_size()
    }

    fn write_offset(&self) -> u32 {
        self.get16(CBR) as u32 % self.ring_size()
    }

    fn config_unlocked(&self) -> bool {
        self.regs[CR9346 as usize] & 0xC0 == 0xC0
    }

    /// One register byte as the driver reads it.
    fn read_byte(&self, o: u16) -> u8 {
        match o {
            CR => {
                let mut v = self.regs[CR as usize] & (CR_RE | CR_TE);
                if self.read_offset() == self.write_offset() {
                    v |= CR_BUFE;
                }
                v
            }
            MSR => {
                let mut v = self.regs[MSR as usize] & 0xC0;
                if !self.link_up {
                    v |= MSR_LINKB;
                }
                v
            }
            0x64 | 0x65 => {
                let mut v: u16 = 0x7809;
                if self.link_up {
                    v |= BMSR_LINK | BMSR_AN_COMPLETE;
                }
                v.to_le_bytes()[(o - BMSR) as usize]
            }
            0x68 | 0x69 => {
                let v: u16 = if self.link_up { 0x45E1 } else { 0 };
                v.to_le_bytes()[(o - ANLPAR) as usize]
            }
            0x60 | 0x61 => {
                let mut v = 0u16;
                for i in 0..4 {
                    let tsd = self.get32(TSD0 + 4 * i);
                    if tsd & TSD_OWN != 0 {
                        v |= 1 << i;
                    }
                    if tsd & TSD_TABT != 0 {
                        v |= 1 << (4 + i);
                    }
                    if tsd & TSD_TUN != 0 {
                        v |= 1 << (8 + i);
                    }
                    if tsd & TSD_TOK != 0 {
                        v |= 1 << (12 + i);
                    }
                }
                v.to_le_bytes()[(o - TSAD_SUMMARY) as usize]
            }
            _ => self.regs[o as usize],
        }
    }

    /// One register byte as the driver writes it.
    fn write_byte(&mut self, o: u16, v: u8) {
        let unlocked = self.config_unlocked();
        let r = &mut self.regs;
        match o {
            // Read-only: CBR, ERBCR status, TSAD summary, BMSR, ANLPAR, CONFIG0.
            0x3A | 0x3B | ERSR | 0x60 | 0x61 | 0x64 | 0x65 | 0x68 | 0x69 | CONFIG0 => {}
            0x3E | 0x3F => r[o as usize] &= !v, // ISR: write 1 to clear
            CR => {
                if v & CR_RST != 0 {
                    self.reset();
                } else {
                    r[CR as usize] = v & (CR_RE | CR_TE);
                }
            }
            0x40..=0x43 => {
                let ro = TCR_HWVER_MASK.to_le_bytes()[(o - TCR) as usize];
                r[o as usize] = (r[o as usize] & ro) | (v & !ro);
            }
            0x48..=0x4B => self.set32(TCTR, 0),
            0x4C..=0x4F => self.set32(MPC, 0),
            MSR => r[MSR as usize] = v & 0xC0,
            0x62 => r[o as usize] = v,
            0x63 => r[o as usize] = v & 0x7F, // BMCR reset bit self-clears
            0x52..=0x57 | CONFIG3 | CONFIG4 | CONFIG5 => {
                if unlocked {
                    r[o as usize] = v;
                }
            }
            CR9346 => r[o as usize] = v & 0xCF,
            // IDR, MAR, TSD, TSAD, RBSTART, CAPR, IMR, RCR and the rest: plain storage.
            _ => r[o as usize] = v,
        }
    }

    fn reg_read(&mut self, offset: u64, size: u8) -> u64 {
        let mut v = 0u64;
        for i in 0..size as u64 {
            let o = offset + i;
            if o < 256 {
                v |= (self.read_byte(o as u16) as u64) << (8 * i);
            }
        }
        v
    }

    fn reg_write(&mut self, offset: u64, size: u8, value: u64) {
        for i in 0..size as u64 {
            let o = offset + i;
            if o < 256 {
                self.write_byte(o as u16, (value >> (8 * i)) as u8);
                // A write covering TSD byte 1 with OWN clear hands the descriptor to the chip.
                if matches!(o, 0x11 | 0x15 | 0x19 | 0x1D) {
                    let n = ((o - 0x11) / 4) as usize;
                    let tsd = self.get32(TSD0 + 4 * n as u16);
                    if tsd & TSD_OWN == 0 {
                        let tsd = tsd & !(TSD_TOK | TSD_TUN | TSD_TABT | TSD_CRS);
                        self.set32(TSD0 + 4 * n as u16, tsd);
                        if !self.tx_pending.contains(&n) {
                            self.tx_pending.push_back(n);
                        }
                    }
                }
            }
        }
        self.update_irq();
    }

    fn transmit(&mut self, dma: &mut dyn Dma) {
        if self.regs[CR as usize] & CR_TE == 0 {
            return;
        }
        while let Some(n) = self.tx_pending.pop_front() {
            let tsd_reg = TSD0 + 4 * n as u16;
            let tsd = self.get32(tsd_reg);
            let len = (tsd & TSD_SIZE_MASK) as usize;
            let addr = self.get32(TSAD0 + 4 * n as u16) as u64;
            let mut frame = vec![0u8; len];
            if len > 1792 || dma.read(addr, &mut frame).is_err() {
                self.stats.dma_errors += 1;
                self.set32(tsd_reg, tsd | TSD_OWN | TSD_TABT);
                self.raise(INT_TER);
                continue;
            }
            let loopback = self.get32(TCR) & TCR_LOOPBACK == TCR_LOOPBACK;
            if !loopback && !self.link_up {
                self.set32(tsd_reg, tsd | TSD_OWN | TSD_TOK | TSD_CRS);
                self.raise(INT_TOK);
                continue;
            }
            self.set32(tsd_reg, tsd | TSD_OWN | TSD_TOK);
            self.stats.tx_frames += 1;
            if loopback {
                self.receive(dma, &frame);
            } else {
                self.port.send(&frame);
            }
            self.raise(INT_TOK);
        }
    }

    /// The receive status bits for a frame, or None if the address filter rejects it.
    fn filter(&self, frame: &[u8]) -> Option<u16> {
        let rcr = self.get32(RCR);
        let dst: [u8; 6] = frame[..6].try_into().unwrap();
        let (status, accepted) = if dst == [0xFF; 6] {
            (RX_BAR, rcr & RCR_AB != 0)
        } else if dst[0] & 1 != 0 {
            let b = multicast_bucket(&dst);
            let hit = self.regs[MAR0 as usize + b / 8] & (1 << (b % 8)) != 0;
            (RX_MAR, rcr & RCR_AM != 0 && hit)
        } else if dst[..] == self.regs[..6] {
            (RX_PAM, rcr & RCR_APM != 0)
        } else {
            (0, false)
        };
        (accepted || rcr & RCR_AAP != 0).then_some(status | RX_ROK)
    }

    fn receive(&mut self, dma: &mut dyn Dma, frame: &[u8]) {
        if frame.len() < 14 {
            return;
        }
        let Some(status) = self.filter(frame) else {
            self.stats.rx_filtered += 1;
            return;
        };
        // A wire frame is at least 60 bytes before its CRC.
        let mut data = frame.to_vec();
        if data.len() < 60 {
            data.resize(60, 0);
        }
        let fcs = crc32(&data);
        let wire_len = data.len() + 4;
        let mut record = Vec::with_capacity(wire_len + 8);
        record.extend_from_slice(&status.to_le_bytes());
        record.extend_from_slice(&(wire_len as u16).to_le_bytes());
        record.extend_from_slice(&data);
        record.extend_from_slice(&fcs.to_le_bytes());

        let size = self.ring_size();
        let (rd, wr) = (self.read_offset(), self.write_offset());
        let used = (wr + size - rd) % size;
        let advance = (record.len() as u32 + 3) & !3;
        if advance >= size - used {
            self.stats.rx_overflow += 1;
            let mpc = self.get32(MPC).wrapping_add(1) & 0x00FF_FFFF;
            self.set32(MPC, mpc);
            self.raise(INT_RXOVW);
            return;
        }
        let base = self.get32(RBSTART) as u64;
        let wrap_linear = self.get32(RCR) & RCR_WRAP != 0;
        let first = if wrap_linear {
            record.len()
        } else {
            record.len().min((size - wr) as usize)
        };
        let mut ok = dma.write(base + wr as u64, &record[..first]).is_ok();
        if first < record.len() {
            ok &= dma.write(base, &record[first..]).is_ok();
        }
        if !ok {
            self.stats.dma_errors += 1;
            self.raise(INT_RER);
            return;
        }
        self.set16(CBR, ((wr + advance) % size) as u16);
        self.stats.rx_frames += 1;
        self.raise(INT_ROK);
    }
}

impl PciDevice for Rtl8139 {
    fn config_read(&mut self, offset: u16, size: u8) -> u32 {
        self.config.read(offset, size)
    }

    fn config_write(&mut self, offset: u16, size: u8, value: u32) {
        self.config.write(offset, size, value);
        self.update_irq();
    }

    fn bars(&self) -> Vec<Bar> {
        self.config.bars()
    }

    fn bar_read(&mut self, bar: usize, offset: u64, size: u8) -> u64 {
        if bar > 1 {
            return u64::MAX;
        }
        self.reg_read(offset, size)
    }

    fn bar_write(&mut self, bar: usize, offset: u64, size: u8, value: u64) {
        if bar <= 1 {
            self.reg_write(offset, size, value);
        }
    }

    fn interrupt_pending(&self) -> bool {
        self.get16(ISR) & self.get16(IMR) != 0 && self.config.command() & CMD_INTX_DISABLE == 0
    }

    fn poll(&mut self, dma: &mut dyn Dma) {
        self.follow_cable();
        self.transmit(dma);
        let receiving = self.regs[CR as usize] & CR_RE != 0;
        while let Some(frame) = self.port.recv() {
            if !self.link_up {
                continue;
            }
            if receiving {
                self.receive(dma, &frame);
            } else {
                // A disabled receiver lets frames on the wire go by.
                self.stats.rx_disabled += 1;
            }
        }
    }
}
