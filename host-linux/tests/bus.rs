//! The PCI bus wired to a guest machine: guest `in`/`out` reach the RTL8139 model through the
//! I/O BAR the bus assigned, guest loads and stores reach the same registers through its memory
//! BAR (MMIO, mapped the way MmMapIoSpace maps it), unclaimed ports and bus addresses float high,
//! and received frames are DMA'd into guest memory with the device's interrupt line reported by
//! `poll`.

use dbt::iced_x86::code_asm::*;
use dbt::{Arch, CallConv, Exit, Machine, Prot};
use host_linux::bus::{GuestDma, PciBus, SharedPciBus, IO_START, IRQ_LINES, MMIO_START};
use host_linux::device::{BarKind, CMD_MEMORY};
use host_linux::packet::{PortHandle, QueuePort};
use host_linux::rtl8139::*;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xAB, 0xCD, 0xEF];

fn setup(arch: Arch) -> (Machine, SharedPciBus, PortHandle, u16, u32) {
    let mut m = Machine::new(arch);
    m.setup_stack(0x10000).expect("stack");
    let bus = SharedPciBus::new(PciBus::new());
    let (port, host) = QueuePort::new();
    let res = bus.attach(Box::new(Rtl8139::new(MAC, Box::new(port))));
    m.set_port_io(Box::new(bus.clone()));
    m.set_mmio(Box::new(bus.clone()));
    let io = res.io_base().expect("I/O BAR");
    (m, bus, host, io, res.irq)
}

/// Assembles `build` (which gets the pointer register holding `data`), runs it to the host return.
fn run(m: &mut Machine, data: u64, build: impl FnOnce(&mut CodeAssembler, AsmMemoryOperand)) {
    let x86 = m.arch() == Arch::X86;
    let mut a = CodeAssembler::new(if x86 { 32 } else { 64 }).unwrap();
    let ptr = if x86 {
        a.mov(ecx, data as u32).unwrap();
        ptr(ecx)
    } else {
        a.mov(rcx, data).unwrap();
        ptr(rcx)
    };
    build(&mut a, ptr);
    a.ret().unwrap();
    let code = m.mem.alloc(0x1000, Prot::READ | Prot::EXEC).unwrap();
    let bytes = a.assemble(code).unwrap();
    m.mem.write_bytes(code, &bytes).unwrap();
    m.prepare_guest_call(code, CallConv::Cdecl, &[]).unwrap();
    match m.run_limited(1_000_000) {
        Some(Exit::HostReturn) => {}
        other => panic!("unexpected exit {other:?}"),
    }
}

fn mac_and_unclaimed(arch: Arch) {
    let (mut m, bus, _host, io, irq) = setup(arch);
    assert_eq!(io, IO_START);
    assert_eq!(irq, IRQ_LINES[0]);
    let res = bus.with(|b| b.resources(0).unwrap().clone());
    assert_eq!(
        res.mmio_ranges().collect::<Vec<_>>(),
        vec![(MMIO_START, 256)]
    );
    // Firmware programmed BARs, interrupt line and decode enables into config space.
    bus.with(|b| {
        assert_eq!(b.config_read(0, 0x10, 4), IO_START as u32 | 1);
        assert_eq!(b.config_read(0, 0x14, 4), MMIO_START as u32);
        assert_eq!(b.config_read(0, 0x3C, 1), irq);
        assert_eq!(b.config_read(0, 0x04, 2) & 7, 7);
        assert_eq!(b.device(0).unwrap().bars()[0].kind, BarKind::Io);
    });

    let data = m.mem.alloc(0x1000, Prot::READ | Prot::WRITE).unwrap();
    run(&mut m, data, |a, p| {
        for i in 0..6u16 {
            a.mov(dx, (io + IDR0 + i) as u32).unwrap();
            a.in_(al, dx).unwrap();
            a.mov(byte_ptr(p + i as i32), al).unwrap();
        }
        a.mov(dx, (io + CR) as u32).unwrap();
        a.mov(al, CR_RST as u32).unwrap();
        a.out(dx, al).unwrap();
        // Unclaimed ports: below, above and far from the BAR.
        a.mov(dx, (io - 1) as u32).unwrap();
        a.in_(al, dx).unwrap();
        a.mov(byte_ptr(p + 8), al).unwrap();
        a.mov(dx, (io + 0x100) as u32).unwrap();
        a.in_(ax, dx).unwrap();
        a.mov(word_ptr(p + 10), ax).unwrap();
        a.mov(dx, 0x80u32).unwrap();
        a.in_(eax, dx).unwrap();
        a.mov(dword_ptr(p + 12), eax).unwrap();
        a.out(dx, eax).unwrap();
    });
    assert_eq!(m.mem.read_vec(data, 6).unwrap(), MAC);
    assert_eq!(m.mem.read_u8(data + 8).unwrap(), 0xFF);
    assert_eq!(m.mem.read_u16(data + 10).unwrap(), 0xFFFF);
    assert_eq!(m.mem.read_u32(data + 12).unwrap(), 0xFFFF_FFFF);
    // The reset completed and the MAC survived it.
    assert_eq!(m.port_read(io + CR, 1) as u8 & CR_RST, 0);
    assert_eq!(
        m.port_read(io + IDR0, 4),
        u32::from_le_bytes([MAC[0], MAC[1], MAC[2], MAC[3]])
    );
}

#[test]
fn guest_reads_mac_through_assigned_ports_x86() {
    mac_and_unclaimed(Arch::X86);
}

#[test]
fn guest_reads_mac_through_assigned_ports_x64() {
    mac_and_unclaimed(Arch::X64);
}

/// Guest programs the receive path with `out`, the ring at bus address `ring_bus` (the guest-
/// physical address of a fresh ring when `None`); returns the ring's guest address.
fn program_rx(m: &mut Machine, io: u16, ring_bus: Option<u32>) -> u64 {
    let ring = m.mem.alloc(0x4000, Prot::READ | Prot::WRITE).unwrap();
    let ring_bus = ring_bus.unwrap_or_else(|| m.mem.virt_to_phys(ring).unwrap() as u32);
    let scratch = m.mem.alloc(0x1000, Prot::READ | Prot::WRITE).unwrap();
    run(m, scratch, |a, _| {
        a.mov(dx, (io + RBSTART) as u32).unwrap();
        a.mov(eax, ring_bus).unwrap();
        a.out(dx, eax).unwrap();
        a.mov(dx, (io + RCR) as u32).unwrap();
        a.mov(eax, RCR_APM | RCR_AB | RCR_WRAP).unwrap();
        a.out(dx, eax).unwrap();
        a.mov(dx, (io + IMR) as u32).unwrap();
        a.mov(ax, INT_ROK as u32).unwrap();
        a.out(dx, ax).unwrap();
        a.mov(dx, (io + CR) as u32).unwrap();
        a.mov(al, (CR_RE | CR_TE) as u32).unwrap();
        a.out(dx, al).unwrap();
    });
    ring
}

fn frame() -> Vec<u8> {
    let mut f = MAC.to_vec();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    f.extend((0..80u8).map(|i| i ^ 0x5A));
    f
}

/// The frame lands in the ring through its guest-physical (bus) address, below 4 GiB on both
/// architectures.
fn injected_frame_is_dmad_into_guest_ring(arch: Arch) {
    let (mut m, bus, host, io, irq) = setup(arch);
    let ring = program_rx(&mut m, io, None);
    assert!(bus.with(|b| b.asserted_irqs()).is_empty());
    let f = frame();
    host.inject(&f);
    let lines = bus.poll(&mut GuestDma::new(&mut m.mem));
    assert_eq!(lines, vec![irq]);
    assert_eq!(m.mem.read_u16(ring).unwrap() & RX_ROK, RX_ROK);
    assert_eq!(m.mem.read_u16(ring + 2).unwrap() as usize, f.len() + 4);
    assert_eq!(m.mem.read_vec(ring + 4, f.len()).unwrap(), f);

    // The guest's ISR acknowledges: the line drops.
    let scratch = m.mem.alloc(0x1000, Prot::READ | Prot::WRITE).unwrap();
    run(&mut m, scratch, |a, p| {
        a.mov(dx, (io + ISR) as u32).unwrap();
        a.in_(ax, dx).unwrap();
        a.mov(word_ptr(p), ax).unwrap();
        a.out(dx, ax).unwrap();
    });
    assert_eq!(m.mem.read_u16(scratch).unwrap() & INT_ROK, INT_ROK);
    assert!(bus.poll(&mut GuestDma::new(&mut m.mem)).is_empty());
}

#[test]
fn injected_frame_is_dmad_into_guest_ring_x86() {
    injected_frame_is_dmad_into_guest_ring(Arch::X86);
}

#[test]
fn injected_frame_is_dmad_into_guest_ring_x64() {
    injected_frame_is_dmad_into_guest_ring(Arch::X64);
}

/// A ring programmed at a bus address outside guest memory (a driver bug): the DMA fails cleanly
/// (receive error, counted) instead of touching anything else.
#[test]
fn rx_dma_outside_guest_memory_is_a_clean_error() {
    let (mut m, bus, host, io, _irq) = setup(Arch::X64);
    program_rx(&mut m, io, Some(0x9000_0000));
    host.inject(&frame());
    // IMR enables only ROK, so the receive error raises no line.
    assert!(bus.poll(&mut GuestDma::new(&mut m.mem)).is_empty());
    let isr = m.port_read(io + ISR, 2) as u16;
    assert_eq!(isr & (INT_RER | INT_ROK), INT_RER);
}

/// The bus address of the device's memory BAR (BAR1).
fn bar1(bus: &SharedPciBus) -> u64 {
    let res = bus.with(|b| b.resources(0).unwrap().clone());
    let (base, len) = res.mmio_ranges().next().expect("memory BAR");
    assert_eq!(len, 256);
    base
}

/// Maps `len` bytes of bus space at `pa` as ntoskrnl's MmMapIoSpace does for an address outside
/// guest RAM (`ntoskrnl::mm::map_io_space` calls exactly this).
fn map_io_space(m: &mut Machine, pa: u64, len: u64) -> u64 {
    assert!(m.mem.phys_to_virt(pa).is_none(), "bus address is guest RAM");
    m.mem.alloc_mmio(len, pa).expect("map I/O space")
}

/// The guest reads the MAC through BAR1 with byte, word and dword loads, programs IMR and the
/// multicast filter with stores, reads them back through MMIO (and the host through port I/O:
/// the same register file), and resets the chip with a byte store.
fn mac_through_mmio(arch: Arch) {
    let (mut m, bus, _host, io, _irq) = setup(arch);
    let base = bar1(&bus);
    assert_eq!(base, MMIO_START);
    let regs = map_io_space(&mut m, base, 256);
    let data = m.mem.alloc(0x1000, Prot::READ | Prot::WRITE).unwrap();
    let x64 = arch == Arch::X64;
    run(&mut m, data, |a, p| {
        // Save the data pointer; address the registers through edx/rdx.
        if x64 {
            a.mov(rdx, regs).unwrap();
        } else {
            a.mov(edx, regs as u32).unwrap();
        }
        let r = |off: u16| {
            if x64 {
                ptr(rdx + off as i32)
            } else {
                ptr(edx + off as i32)
            }
        };
        for i in 0..6u16 {
            a.mov(al, byte_ptr(r(IDR0 + i))).unwrap();
            a.mov(byte_ptr(p + i as i32), al).unwrap();
        }
        a.mov(eax, dword_ptr(r(IDR0))).unwrap();
        a.mov(dword_ptr(p + 8), eax).unwrap();
        a.mov(ax, word_ptr(r(IDR0 + 4))).unwrap();
        a.mov(word_ptr(p + 12), ax).unwrap();
        // IMR: write, then read back.
        a.mov(word_ptr(r(IMR)), (INT_ROK | INT_TOK) as u32).unwrap();
        a.mov(ax, word_ptr(r(IMR))).unwrap();
        a.mov(word_ptr(p + 14), ax).unwrap();
        // MAR0..7 with a read-modify-write.
        a.mov(dword_ptr(r(MAR0)), 0x8000_0001u32).unwrap();
        a.or(dword_ptr(r(MAR0)), 0x0100u32).unwrap();
        if x64 {
            a.mov(rax, qword_ptr(r(MAR0))).unwrap();
            a.mov(qword_ptr(p + 16), rax).unwrap();
        } else {
            a.mov(eax, dword_ptr(r(MAR0))).unwrap();
            a.mov(dword_ptr(p + 16), eax).unwrap();
        }
        // TCR's hardware version bits are read-only.
        a.mov(eax, dword_ptr(r(TCR))).unwrap();
        a.mov(dword_ptr(p + 24), eax).unwrap();
    });
    assert_eq!(m.mem.read_vec(data, 6).unwrap(), MAC);
    assert_eq!(
        m.mem.read_u32(data + 8).unwrap(),
        u32::from_le_bytes([MAC[0], MAC[1], MAC[2], MAC[3]])
    );
    assert_eq!(
        m.mem.read_u16(data + 12).unwrap(),
        u16::from_le_bytes([MAC[4], MAC[5]])
    );
    assert_eq!(m.mem.read_u16(data + 14).unwrap(), INT_ROK | INT_TOK);
    assert_eq!(m.mem.read_u32(data + 16).unwrap(), 0x8000_0101);
    assert_eq!(
        m.mem.read_u32(data + 24).unwrap() & TCR_HWVER_8139C,
        TCR_HWVER_8139C
    );
    // The I/O BAR decodes the same registers.
    assert_eq!(m.port_read(io + IMR, 2) as u16, INT_ROK | INT_TOK);
    assert_eq!(m.port_read(io + MAR0, 4), 0x8000_0101);
    // Host-side register access (READ_REGISTER_* style) goes through the bus too.
    assert_eq!(
        m.read_mem(regs + IMR as u64, 2),
        Ok((INT_ROK | INT_TOK) as u64)
    );
    m.write_mem(regs + CR as u64, 1, CR_RST as u64).unwrap();
    assert_eq!(m.port_read(io + IMR, 2), 0, "reset cleared IMR");
    assert_eq!(
        m.read_mem(regs + IDR0 as u64 + 4, 2),
        Ok(u16::from_le_bytes([MAC[4], MAC[5]]) as u64)
    );
    // Plain host accessors refuse device memory instead of reading stale RAM.
    assert!(m.mem.read_u32(regs).is_err());
}

#[test]
fn guest_reads_mac_through_mmio_bar_x86() {
    mac_through_mmio(Arch::X86);
}

#[test]
fn guest_reads_mac_through_mmio_bar_x64() {
    mac_through_mmio(Arch::X64);
}

/// Bus addresses no device decodes read as all ones at every size and ignore writes: one far from
/// any BAR, the rest of BAR1's page past its 256 bytes, and BAR1 itself once the command
/// register turns memory decode off.
fn unclaimed_mmio(arch: Arch) {
    let (mut m, bus, _host, _io, _irq) = setup(arch);
    let base = bar1(&bus);
    let far = map_io_space(&mut m, 0xF000_0000, 0x1000);
    let regs = map_io_space(&mut m, base, 0x1000);
    let data = m.mem.alloc(0x1000, Prot::READ | Prot::WRITE).unwrap();
    let x64 = arch == Arch::X64;
    let probe = |m: &mut Machine, target: u64| {
        run(m, data, |a, p| {
            if x64 {
                a.mov(rdx, target).unwrap();
            } else {
                a.mov(edx, target as u32).unwrap();
            }
            let r = |off: i32| if x64 { ptr(rdx + off) } else { ptr(edx + off) };
            a.mov(dword_ptr(r(0x10)), 0x1234_5678u32).unwrap();
            a.mov(al, byte_ptr(r(0x10))).unwrap();
            a.mov(byte_ptr(p), al).unwrap();
            a.mov(byte_ptr(p + 1), al).unwrap();
            a.mov(ax, word_ptr(r(0x12))).unwrap();
            a.mov(word_ptr(p + 2), ax).unwrap();
            a.mov(eax, dword_ptr(r(0x10))).unwrap();
            a.mov(dword_ptr(p + 4), eax).unwrap();
            a.movq(xmm0, qword_ptr(r(0x18))).unwrap();
            a.movq(qword_ptr(p + 8), xmm0).unwrap();
        });
        m.mem.read_vec(data, 16).unwrap()
    };
    assert_eq!(probe(&mut m, far), vec![0xFF; 16]);
    assert_eq!(probe(&mut m, regs + 0x100), vec![0xFF; 16]);
    // With memory decode off, BAR1 no longer answers (MAR0 at offset 0x08 would be zero).
    let cmd = bus.with(|b| b.config_read(0, 0x04, 2));
    bus.with(|b| b.config_write(0, 0x04, 2, cmd & !(CMD_MEMORY as u32)));
    assert_eq!(probe(&mut m, regs - 0x8), vec![0xFF; 16]);
    bus.with(|b| b.config_write(0, 0x04, 2, cmd));
    assert_eq!(m.read_mem(regs + MAR0 as u64, 4), Ok(0));
}

#[test]
fn unclaimed_bus_addresses_read_all_ones_x86() {
    unclaimed_mmio(Arch::X86);
}

#[test]
fn unclaimed_bus_addresses_read_all_ones_x64() {
    unclaimed_mmio(Arch::X64);
}
