//! Drives the RTL8139 model through its registers the way a driver written from the datasheet
//! does, with a flat memory standing in for the driver's DMA buffers.

use host_linux::device::{BarKind, Dma, PciDevice, VecMemory, CMD_BUS_MASTER, CMD_IO};
use host_linux::packet::{PortHandle, QueuePort};
use host_linux::rtl8139::*;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const MEM: u64 = 0x0010_0000;
const RING: u64 = MEM;
const TXBUF: u64 = MEM + 0x2_0000;

struct Nic {
    dev: Rtl8139,
    host: PortHandle,
    mem: VecMemory,
}

impl Nic {
    fn r8(&mut self, o: u16) -> u8 {
        self.dev.bar_read(0, o as u64, 1) as u8
    }
    fn r16(&mut self, o: u16) -> u16 {
        self.dev.bar_read(0, o as u64, 2) as u16
    }
    fn r32(&mut self, o: u16) -> u32 {
        self.dev.bar_read(0, o as u64, 4) as u32
    }
    fn w8(&mut self, o: u16, v: u8) {
        self.dev.bar_write(0, o as u64, 1, v as u64)
    }
    fn w16(&mut self, o: u16, v: u16) {
        self.dev.bar_write(0, o as u64, 2, v as u64)
    }
    fn w32(&mut self, o: u16, v: u32) {
        self.dev.bar_write(0, o as u64, 4, v as u64)
    }
    fn poll(&mut self) {
        self.dev.poll(&mut self.mem);
    }
}

/// A powered-up, reset, unconfigured card.
fn card() -> Nic {
    let (port, host) = QueuePort::new();
    let mut dev = Rtl8139::new(MAC, Box::new(port));
    dev.config_write(0x04, 2, (CMD_IO | CMD_BUS_MASTER) as u32);
    Nic {
        dev,
        host,
        mem: VecMemory::new(MEM, 0x4_0000),
    }
}

/// The usual driver bring-up: wake, reset, ring, filters, interrupts, enable.
fn bring_up(rcr: u32) -> Nic {
    let mut n = card();
    n.w8(CR9346, 0xC0);
    n.w8(CONFIG1, 0x00);
    n.w8(CR9346, 0x00);
    n.w8(CR, CR_RST);
    assert_eq!(n.r8(CR) & CR_RST, 0, "reset completes");
    n.w32(RBSTART, RING as u32);
    n.w16(
        IMR,
        INT_ROK | INT_TOK | INT_RER | INT_TER | INT_RXOVW | INT_LINKCHG,
    );
    n.w32(RCR, rcr);
    n.w8(CR, CR_RE | CR_TE);
    n
}

fn frame(dst: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
    while f.len() < len {
        f.push(seed.wrapping_add(f.len() as u8));
    }
    f
}

/// Reads the packet at ring offset `off` like a driver: (status, length with CRC, data).
fn ring_packet(mem: &mut VecMemory, size: u32, off: u32) -> (u16, u16, Vec<u8>) {
    let byte = |mem: &mut VecMemory, i: u32| {
        let mut b = [0u8];
        mem.read(RING + ((off + i) % size) as u64, &mut b).unwrap();
        b[0]
    };
    let status = u16::from_le_bytes([byte(mem, 0), byte(mem, 1)]);
    let len = u16::from_le_bytes([byte(mem, 2), byte(mem, 3)]);
    let data = (0..len as u32).map(|i| byte(mem, 4 + i)).collect();
    (status, len, data)
}

#[test]
fn config_space_ids_and_bar_sizing() {
    let mut n = card();
    let d = &mut n.dev;
    assert_eq!(d.config_read(0x00, 4), 0x8139_10EC);
    assert_eq!(d.config_read(0x08, 4) >> 8, 0x02_00_00);
    assert_eq!(d.config_read(0x2C, 4), 0x8139_10EC);
    assert_eq!(d.config_read(0x3D, 1), 1, "INTA");
    d.config_write(0x3C, 1, 11);
    assert_eq!(d.config_read(0x3C, 1), 11);
    d.config_write(0x00, 4, 0);
    assert_eq!(d.config_read(0x00, 2), 0x10EC, "IDs are read-only");

    let bars = d.bars();
    assert_eq!(bars.len(), 2);
    assert_eq!((bars[0].kind, bars[0].size), (BarKind::Io, 256));
    assert_eq!((bars[1].kind, bars[1].size), (BarKind::Mmio, 256));
    d.config_write(0x10, 4, 0xFFFF_FFFF);
    assert_eq!(d.config_read(0x10, 4), 0xFFFF_FF01);
    d.config_write(0x14, 4, 0xFFFF_FFFF);
    assert_eq!(d.config_read(0x14, 4), 0xFFFF_FF00);
    d.config_write(0x10, 4, 0xC001);
    d.config_write(0x14, 4, 0xFEBF_1000);
    assert_eq!(d.config_read(0x10, 4), 0xC001);
    assert_eq!(d.config_read(0x14, 4), 0xFEBF_1000);
    assert_eq!(d.config_read(0x18, 4), 0, "BAR2 unimplemented");
    d.config_write(0x18, 4, 0xFFFF_FFFF);
    assert_eq!(d.config_read(0x18, 4), 0);
    assert_eq!(
        d.config_read(0x04, 2) as u16,
        CMD_IO | CMD_BUS_MASTER,
        "command register"
    );
}

#[test]
fn reset_defaults_and_mac() {
    let mut n = bring_up(RCR_APM);
    let mac: Vec<u8> = (0..6).map(|i| n.r8(IDR0 + i)).collect();
    assert_eq!(mac, MAC);
    // Same register through the memory BAR, as a dword.
    assert_eq!(
        n.dev.bar_read(1, 0, 4) as u32,
        u32::from_le_bytes([MAC[0], MAC[1], MAC[2], MAC[3]])
    );
    for i in 0..4 {
        assert_eq!(n.r32(TSD0 + 4 * i) & TSD_OWN, TSD_OWN);
    }
    assert_eq!(n.r16(CAPR), 0xFFF0);
    assert_eq!(n.r16(CBR), 0);
    assert_eq!(n.r8(CR), CR_RE | CR_TE | CR_BUFE);
    assert_eq!(n.r32(TCR) & 0x7CC0_0000, TCR_HWVER_8139C);
    assert_eq!(n.r8(MSR) & MSR_LINKB, 0, "link up");
    assert_ne!(n.r16(BMSR) & BMSR_LINK, 0);
    // CONFIG registers are locked unless 9346CR says otherwise.
    n.w8(CONFIG1, 0x20);
    assert_eq!(n.r8(CONFIG1), 0);
    // Changing the station address.
    n.w32(IDR0, 0x4433_2202);
    assert_eq!(n.r8(IDR0 + 1), 0x22);
}

#[test]
fn transmit_through_four_descriptors() {
    let mut n = bring_up(RCR_APM);
    assert!(!n.dev.interrupt_pending());
    for i in 0..6u16 {
        let desc = i % 4;
        let f = frame([0xFF; 6], 100 + i as usize, i as u8);
        let addr = TXBUF + 0x800 * desc as u64;
        n.mem.write(addr, &f).unwrap();
        n.w32(TSAD0 + 4 * desc, addr as u32);
        n.w32(TSD0 + 4 * desc, f.len() as u32);
        assert_eq!(n.r32(TSD0 + 4 * desc) & TSD_OWN, 0, "chip owns it");
        n.poll();
        assert_eq!(n.host.take_sent().unwrap(), f);
        let tsd = n.r32(TSD0 + 4 * desc);
        assert_eq!(tsd & (TSD_OWN | TSD_TOK), TSD_OWN | TSD_TOK);
        assert_ne!(n.r16(TSAD_SUMMARY) & (1 << (12 + desc)), 0);
        assert_eq!(n.r16(ISR), INT_TOK);
        assert!(n.dev.interrupt_pending());
        assert_ne!(n.dev.config_read(0x06, 2) & 0x8, 0, "status.interrupt");
        n.w16(ISR, INT_TOK);
        assert!(!n.dev.interrupt_pending());
    }
    assert!(n.host.take_sent().is_none());
    assert_eq!(n.dev.stats().tx_frames, 6);

    // A bad DMA address aborts the transmit.
    n.w32(TSAD0, 0x10);
    n.w32(TSD0, 64);
    n.poll();
    assert_ne!(n.r32(TSD0) & TSD_TABT, 0);
    assert_ne!(n.r16(ISR) & INT_TER, 0);
    assert!(n.host.take_sent().is_none());
}

#[test]
fn transmit_waits_for_te() {
    let mut n = bring_up(RCR_APM);
    n.w8(CR, CR_RE);
    let f = frame([0xFF; 6], 64, 0);
    n.mem.write(TXBUF, &f).unwrap();
    n.w32(TSAD0, TXBUF as u32);
    n.w32(TSD0, 64);
    n.poll();
    assert!(n.host.take_sent().is_none());
    n.w8(CR, CR_RE | CR_TE);
    n.poll();
    assert_eq!(n.host.take_sent().unwrap(), f);
}

#[test]
fn receive_into_ring() {
    let mut n = bring_up(RCR_APM | RCR_AB);
    let f = frame(MAC, 100, 7);
    n.host.inject(&f);
    n.poll();
    let (status, len, data) = ring_packet(&mut n.mem, 8192, 0);
    assert_eq!(status, RX_ROK | RX_PAM);
    assert_eq!(len as usize, 104);
    assert_eq!(&data[..100], &f[..]);
    assert_eq!(&data[100..], &crc32(&f).to_le_bytes());
    assert_eq!(n.r16(CBR), 108);
    assert_eq!(n.r8(CR) & CR_BUFE, 0);
    assert_eq!(n.r16(ISR), INT_ROK);
    assert!(n.dev.interrupt_pending());

    // Short frames are padded to the minimum; broadcast is flagged.
    let short = frame([0xFF; 6], 20, 1);
    n.host.inject(&short);
    n.poll();
    let (status, len, data) = ring_packet(&mut n.mem, 8192, 108);
    assert_eq!(status, RX_ROK | RX_BAR);
    assert_eq!(len, 64);
    assert_eq!(&data[..20], &short[..]);
    assert_eq!(n.r16(CBR), 108 + 68);

    // The driver consumes both: CAPR = next read offset - 0x10; the ring is empty again.
    n.w16(CAPR, 108 + 68 - 0x10);
    assert_eq!(n.r8(CR) & CR_BUFE, CR_BUFE);
    n.w16(ISR, INT_ROK);
    assert!(!n.dev.interrupt_pending());
}

#[test]
fn address_filter() {
    let mut n = bring_up(RCR_APM);
    let other = [0x02, 0, 0, 0, 0, 9];
    let mcast = [0x01, 0x00, 0x5E, 0x00, 0x00, 0x01];
    n.host.inject(&frame([0xFF; 6], 60, 0));
    n.host.inject(&frame(other, 60, 0));
    n.host.inject(&frame(mcast, 60, 0));
    n.poll();
    assert_eq!(n.r16(CBR), 0, "nothing accepted");
    assert_eq!(n.dev.stats().rx_filtered, 3);

    // Multicast needs AM and the hash bit in MAR.
    n.w32(RCR, RCR_APM | RCR_AM);
    n.host.inject(&frame(mcast, 60, 0));
    n.poll();
    assert_eq!(n.r16(CBR), 0);
    let b = multicast_bucket(&mcast);
    n.w8(MAR0 + (b / 8) as u16, 1 << (b % 8));
    n.host.inject(&frame(mcast, 60, 0));
    n.poll();
    assert_eq!(ring_packet(&mut n.mem, 8192, 0).0, RX_ROK | RX_MAR);

    // Promiscuous takes anything.
    n.w32(RCR, RCR_AAP);
    n.host.inject(&frame(other, 60, 0));
    n.poll();
    assert_eq!(ring_packet(&mut n.mem, 8192, 68).0, RX_ROK);
    assert_eq!(n.r16(CBR), 136);
}

/// A driver's receive loop: consume every packet, advance CAPR.
fn drain(n: &mut Nic, size: u32, read: &mut u32, out: &mut Vec<Vec<u8>>) {
    while n.r8(CR) & CR_BUFE == 0 {
        let (status, len, data) = ring_packet(&mut n.mem, size, *read);
        assert_eq!(status & RX_ROK, RX_ROK);
        out.push(data[..len as usize - 4].to_vec());
        *read = (*read + len as u32 + 4 + 3) & !3;
        *read %= size;
        n.w16(CAPR, (*read as u16).wrapping_sub(0x10));
        n.w16(ISR, INT_ROK);
    }
}

#[test]
fn ring_wraps_with_capr() {
    // No WRAP bit: packets that run past the end continue at the start of the ring.
    let mut n = bring_up(RCR_APM);
    let mut read = 0;
    let mut got = Vec::new();
    let mut sent = Vec::new();
    for i in 0..40 {
        let f = frame(MAC, 700 + 13 * i, i as u8);
        sent.push(f.clone());
        n.host.inject(&f);
        if i % 3 == 2 {
            n.poll();
            drain(&mut n, 8192, &mut read, &mut got);
        }
    }
    n.poll();
    drain(&mut n, 8192, &mut read, &mut got);
    assert_eq!(got, sent);
    assert_eq!(n.dev.stats().rx_overflow, 0);
    assert_eq!(n.r16(CBR) as u32, read);
}

#[test]
fn wrap_bit_writes_past_the_end_and_bigger_ring() {
    // 16K ring with WRAP: a packet crossing the end is written linearly into the slack.
    let rcr = RCR_APM | RCR_WRAP | (1 << RCR_RBLEN_SHIFT);
    let mut n = bring_up(rcr);
    let size = 16384u32;
    let mut read = 0u32;
    for i in 0..30 {
        let f = frame(MAC, 1000, i as u8);
        n.host.inject(&f);
        n.poll();
        let (status, len, data) = {
            let mut h = [0u8; 4];
            n.mem.read(RING + read as u64, &mut h).unwrap();
            let len = u16::from_le_bytes([h[2], h[3]]);
            let mut d = vec![0u8; len as usize];
            n.mem.read(RING + read as u64 + 4, &mut d).unwrap();
            (u16::from_le_bytes([h[0], h[1]]), len, d)
        };
        assert_eq!(status, RX_ROK | RX_PAM);
        assert_eq!(&data[..len as usize - 4], &f[..], "packet {i}");
        read = ((read + len as u32 + 4 + 3) & !3) % size;
        n.w16(CAPR, (read as u16).wrapping_sub(0x10));
        assert_eq!(n.r16(CBR) as u32, read);
    }
}

#[test]
fn overflow_when_driver_does_not_read() {
    let mut n = bring_up(RCR_APM);
    for i in 0..10 {
        n.host.inject(&frame(MAC, 1500, i));
    }
    n.poll();
    // 8K ring holds five 1508-byte records with room to spare, never a sixth.
    assert_eq!(n.dev.stats().rx_frames, 5);
    assert_eq!(n.dev.stats().rx_overflow, 5);
    assert_ne!(n.r16(ISR) & INT_RXOVW, 0);
    assert_eq!(n.r32(MPC), 5);
    n.w32(MPC, 0);
    assert_eq!(n.r32(MPC), 0);
    let mut read = 0;
    let mut got = Vec::new();
    drain(&mut n, 8192, &mut read, &mut got);
    assert_eq!(got.len(), 5);
    n.host.inject(&frame(MAC, 1500, 99));
    n.poll();
    assert_eq!(n.dev.stats().rx_frames, 6);
}

#[test]
fn isr_write_one_to_clear() {
    let mut n = bring_up(RCR_APM);
    n.host.inject(&frame(MAC, 60, 0));
    n.poll();
    n.mem.write(TXBUF, &frame(MAC, 60, 0)).unwrap();
    n.w32(TSAD0, TXBUF as u32);
    n.w32(TSD0, 60);
    n.poll();
    assert_eq!(n.r16(ISR), INT_ROK | INT_TOK);
    n.w16(ISR, INT_ROK);
    assert_eq!(n.r16(ISR), INT_TOK);
    n.w16(ISR, 0);
    assert_eq!(n.r16(ISR), INT_TOK);
    // Masked sources stay latched but do not interrupt.
    n.w16(IMR, INT_ROK);
    assert!(!n.dev.interrupt_pending());
    n.w16(IMR, INT_TOK);
    assert!(n.dev.interrupt_pending());
    // INTx disable in the command register gates the line.
    n.dev.config_write(0x04, 2, 0x0405);
    assert!(!n.dev.interrupt_pending());
    n.dev.config_write(0x04, 2, 0x0005);
    n.w16(ISR, 0xFFFF);
    assert_eq!(n.r16(ISR), 0);
    assert!(!n.dev.interrupt_pending());
}

#[test]
fn link_down_and_up() {
    let mut n = bring_up(RCR_APM);
    n.dev.set_link(false);
    assert_eq!(n.r16(ISR), INT_LINKCHG);
    assert!(n.dev.interrupt_pending());
    assert_eq!(n.r8(MSR) & MSR_LINKB, MSR_LINKB);
    assert_eq!(n.r16(BMSR) & BMSR_LINK, 0);
    n.w16(ISR, INT_LINKCHG);
    n.dev.set_link(false);
    assert_eq!(n.r16(ISR), 0, "no change, no interrupt");
    n.dev.set_link(true);
    assert_eq!(n.r16(ISR), INT_LINKCHG);
    assert_eq!(n.r8(MSR) & MSR_LINKB, 0);
    assert_ne!(n.r16(BMSR) & (BMSR_LINK | BMSR_AN_COMPLETE), 0);
}

/// The cable is shared: pulling it elsewhere takes the link down at the next poll; without link
/// transmissions complete with carrier lost and reach nothing, and arriving frames are not
/// received.
#[test]
fn pulled_cable_takes_the_link_down_at_the_next_poll() {
    let mut n = bring_up(RCR_APM | RCR_AB);
    let cable = n.dev.cable();
    cable.plug(false);
    assert_eq!(n.r16(ISR), 0, "nothing before the device polls");
    n.poll();
    assert_eq!(n.r16(ISR), INT_LINKCHG);
    assert_eq!(n.r8(MSR) & MSR_LINKB, MSR_LINKB);
    n.w16(ISR, INT_LINKCHG);

    let f = frame([0xFF; 6], 100, 7);
    n.mem.write(TXBUF, &f).unwrap();
    n.w32(TSAD0, TXBUF as u32);
    n.w32(TSD0, f.len() as u32);
    n.poll();
    assert_eq!(n.r32(TSD0) & (TSD_TOK | TSD_CRS), TSD_TOK | TSD_CRS);
    assert!(n.host.take_sent().is_none());
    n.w16(ISR, INT_TOK);
    n.host.inject(&frame(MAC, 80, 1));
    n.poll();
    assert_eq!(n.r16(ISR), 0, "no receive without link");
    assert_eq!(n.dev.stats().rx_frames, 0);

    cable.plug(true);
    n.poll();
    assert_eq!(n.r16(ISR), INT_LINKCHG);
    assert_eq!(n.r8(MSR) & MSR_LINKB, 0);
}

/// Frames arriving while the receiver is disabled go by (counted), instead of waiting on the
/// wire forever.
#[test]
fn disabled_receiver_lets_frames_go_by() {
    let mut n = bring_up(RCR_APM);
    n.w8(CR, CR_TE);
    n.host.inject(&frame(MAC, 80, 1));
    n.poll();
    assert_eq!(n.host.pending_inject(), 0);
    assert_eq!(n.dev.stats().rx_disabled, 1);
    assert_eq!(n.dev.stats().rx_frames, 0);
}

#[test]
fn loopback_mode_receives_own_frames() {
    let mut n = bring_up(RCR_APM);
    n.w32(TCR, TCR_LOOPBACK);
    assert_eq!(
        n.r32(TCR) & 0x7CC0_0000,
        TCR_HWVER_8139C,
        "version bits read-only"
    );
    let f = frame(MAC, 80, 3);
    n.mem.write(TXBUF, &f).unwrap();
    n.w32(TSAD0, TXBUF as u32);
    n.w32(TSD0, 80);
    n.poll();
    assert!(n.host.take_sent().is_none());
    let (_, len, data) = ring_packet(&mut n.mem, 8192, 0);
    assert_eq!(&data[..len as usize - 4], &f[..]);
    assert_eq!(n.r16(ISR), INT_ROK | INT_TOK);
}

#[test]
fn crc_and_hash_known_values() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    // Buckets index the 64 MAR bits.
    assert!(multicast_bucket(&[0x01, 0x00, 0x5E, 0x00, 0x00, 0x01]) < 64);
}
