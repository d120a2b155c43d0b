//! Memory-mapped I/O: every guest access to an MMIO page (each operand size, read-modify-write,
//! string instructions, SSE, a polling loop with a fused compare and branch) reaches the handler
//! once, in program order, with the bus address, size and value; instruction fetch from MMIO
//! faults; host accessors refuse MMIO while `Machine::read_mem`/`write_mem` reach it. Everything
//! runs on x86-32 and x64.
mod common;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use common::*;
use dbt::iced_x86::code_asm::*;
use dbt::iced_x86::IcedError;
use dbt::{Arch, CallConv, Exit, FaultKind, Machine, MemFault, Mmio, Prot, Reg, PAGE_SIZE};

/// Bus address the test MMIO window stands for.
const BUS: u64 = 0xFEB0_0000;

/// One access seen by the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read(u64, u8),
    Write(u64, u8, u64),
}
use Access::{Read, Write};

/// A byte-addressed register file that logs every access; unwritten bytes read as the low byte
/// of their bus address XOR 0xA5.
#[derive(Clone, Default)]
struct Device {
    log: Rc<RefCell<Vec<Access>>>,
    bytes: Rc<RefCell<HashMap<u64, u8>>>,
}

impl Device {
    fn byte(&self, addr: u64) -> u8 {
        self.bytes
            .borrow()
            .get(&addr)
            .copied()
            .unwrap_or(addr as u8 ^ 0xA5)
    }

    /// What a read of `size` bytes at `addr` returns (without logging it).
    fn value(&self, addr: u64, size: u8) -> u64 {
        (0..size as u64).fold(0, |v, i| v | (self.byte(addr + i) as u64) << (8 * i))
    }

    fn take_log(&self) -> Vec<Access> {
        std::mem::take(&mut self.log.borrow_mut())
    }
}

impl Mmio for Device {
    fn mmio_read(&mut self, addr: u64, size: u8) -> u64 {
        self.log.borrow_mut().push(Read(addr, size));
        self.value(addr, size)
    }

    fn mmio_write(&mut self, addr: u64, size: u8, value: u64) {
        self.log.borrow_mut().push(Write(addr, size, value));
        let mut bytes = self.bytes.borrow_mut();
        for i in 0..size as u64 {
            bytes.insert(addr + i, (value >> (8 * i)) as u8);
        }
    }
}

/// A machine with two pages of MMIO standing for `BUS`, backed by a fresh [`Device`]; returns the
/// guest address of `BUS`, and a RAM scratch page.
fn setup(arch: Arch) -> (Machine, Device, u64, u64) {
    let mut m = machine(arch);
    let dev = Device::default();
    m.set_mmio(Box::new(dev.clone()));
    let va = m.mem.alloc_mmio(2 * PAGE_SIZE, BUS).expect("map MMIO");
    assert_eq!(va % PAGE_SIZE, 0);
    let ram = data(&mut m, PAGE_SIZE);
    (m, dev, va, ram)
}

/// `[reg + off]` for the MMIO base register (ebx/rbx).
fn io(arch: Arch, off: i32) -> AsmMemoryOperand {
    match arch {
        Arch::X64 => ptr(rbx + off),
        Arch::X86 => ptr(ebx + off),
    }
}

/// `[reg + off]` for the RAM base register (ebp/rbp).
fn mem(arch: Arch, off: i32) -> AsmMemoryOperand {
    match arch {
        Arch::X64 => ptr(rbp + off),
        Arch::X86 => ptr(ebp + off),
    }
}

/// Runs `build` with ebx/rbx = `mmio` and ebp/rbp = `ram` (both saved and restored).
fn run_with(
    m: &mut Machine,
    mmio: u64,
    ram: u64,
    build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) {
    let arch = m.arch();
    let code = load(m, |a| {
        match arch {
            Arch::X64 => {
                a.push(rbx)?;
                a.push(rbp)?;
                a.mov(rbx, mmio)?;
                a.mov(rbp, ram)?;
            }
            Arch::X86 => {
                a.push(ebx)?;
                a.push(ebp)?;
                a.mov(ebx, mmio as u32)?;
                a.mov(ebp, ram as u32)?;
            }
        }
        build(a)?;
        match arch {
            Arch::X64 => {
                a.pop(rbp)?;
                a.pop(rbx)?;
            }
            Arch::X86 => {
                a.pop(ebp)?;
                a.pop(ebx)?;
            }
        }
        a.ret()
    });
    call(m, code);
}

fn each_size(arch: Arch) {
    let (mut m, dev, va, ram) = setup(arch);
    run_with(&mut m, va, ram, |a| {
        a.mov(al, byte_ptr(io(arch, 0x10)))?;
        a.mov(byte_ptr(mem(arch, 0)), al)?;
        a.mov(ax, word_ptr(io(arch, 0x22)))?;
        a.mov(word_ptr(mem(arch, 2)), ax)?;
        a.mov(eax, dword_ptr(io(arch, 0x34)))?;
        a.mov(dword_ptr(mem(arch, 4)), eax)?;
        a.movq(xmm0, qword_ptr(io(arch, 0x48)))?;
        a.movq(qword_ptr(mem(arch, 8)), xmm0)?;
        a.mov(byte_ptr(io(arch, 0x50)), 0x12)?;
        a.mov(word_ptr(io(arch, 0x52)), 0x3456)?;
        a.mov(dword_ptr(io(arch, 0x54)), 0x789A_BCDE)?;
        a.mov(ecx, 0x1122_3344)?;
        a.mov(dword_ptr(io(arch, 0x1004)), ecx)?;
        a.mov(ecx, 0x5566_7788)?;
        a.movd(xmm1, ecx)?;
        a.movq(qword_ptr(io(arch, 0x58)), xmm1)?;
        a.movzx(ecx, byte_ptr(io(arch, 0x60)))?;
        a.mov(dword_ptr(mem(arch, 16)), ecx)?;
        a.movsx(ecx, word_ptr(io(arch, 0x62)))?;
        a.mov(dword_ptr(mem(arch, 20)), ecx)?;
        if arch == Arch::X64 {
            a.mov(rax, qword_ptr(rbx + 0x70))?;
            a.mov(qword_ptr(rbp + 24), rax)?;
            a.mov(rax, 0x0102_0304_0506_0708u64)?;
            a.mov(qword_ptr(rbx + 0x78), rax)?;
        }
        Ok(())
    });
    let mut want = vec![
        Read(BUS + 0x10, 1),
        Read(BUS + 0x22, 2),
        Read(BUS + 0x34, 4),
        Read(BUS + 0x48, 8),
        Write(BUS + 0x50, 1, 0x12),
        Write(BUS + 0x52, 2, 0x3456),
        Write(BUS + 0x54, 4, 0x789A_BCDE),
        Write(BUS + 0x1004, 4, 0x1122_3344),
        Write(BUS + 0x58, 8, 0x5566_7788),
        Read(BUS + 0x60, 1),
        Read(BUS + 0x62, 2),
    ];
    if arch == Arch::X64 {
        want.push(Read(BUS + 0x70, 8));
        want.push(Write(BUS + 0x78, 8, 0x0102_0304_0506_0708));
    }
    assert_eq!(dev.take_log(), want);
    let fresh = Device::default();
    assert_eq!(
        m.mem.read_u8(ram).unwrap() as u64,
        fresh.value(BUS + 0x10, 1)
    );
    assert_eq!(
        m.mem.read_u16(ram + 2).unwrap() as u64,
        fresh.value(BUS + 0x22, 2)
    );
    assert_eq!(
        m.mem.read_u32(ram + 4).unwrap() as u64,
        fresh.value(BUS + 0x34, 4)
    );
    assert_eq!(m.mem.read_u64(ram + 8).unwrap(), fresh.value(BUS + 0x48, 8));
    assert_eq!(
        m.mem.read_u32(ram + 16).unwrap() as u64,
        fresh.value(BUS + 0x60, 1)
    );
    let sx = fresh.value(BUS + 0x62, 2) as u16 as i16 as i32 as u32;
    assert_eq!(m.mem.read_u32(ram + 20).unwrap(), sx);
    if arch == Arch::X64 {
        assert_eq!(
            m.mem.read_u64(ram + 24).unwrap(),
            fresh.value(BUS + 0x70, 8)
        );
    }
    assert_eq!(dev.value(BUS + 0x54, 4), 0x789A_BCDE);
}

#[test]
fn each_access_size_x86() {
    each_size(Arch::X86);
}

#[test]
fn each_access_size_x64() {
    each_size(Arch::X64);
}

fn read_modify_write(arch: Arch) {
    let (mut m, dev, va, ram) = setup(arch);
    dev.bytes.borrow_mut().extend([
        (BUS + 0x10, 0x41),
        (BUS + 0x11, 0),
        (BUS + 0x12, 0),
        (BUS + 0x13, 0),
    ]);
    run_with(&mut m, va, ram, |a| {
        a.add(dword_ptr(io(arch, 0x10)), 1)?;
        a.or(word_ptr(io(arch, 0x20)), 0x8000)?;
        a.inc(byte_ptr(io(arch, 0x30)))?;
        a.mov(eax, 5)?;
        a.lock().xadd(dword_ptr(io(arch, 0x10)), eax)?;
        a.mov(dword_ptr(mem(arch, 0)), eax)?;
        a.mov(ecx, 0xCAFE)?;
        a.xchg(dword_ptr(io(arch, 0x40)), ecx)?;
        a.mov(dword_ptr(mem(arch, 4)), ecx)?;
        a.test(byte_ptr(io(arch, 0x50)), 0x80)?;
        a.bts(dword_ptr(io(arch, 0x60)), 3)?;
        Ok(())
    });
    let fresh = Device::default();
    let w20 = fresh.value(BUS + 0x20, 2) | 0x8000;
    let b30 = (fresh.value(BUS + 0x30, 1) + 1) & 0xFF;
    let d60 = fresh.value(BUS + 0x60, 4) | 8;
    assert_eq!(
        dev.take_log(),
        vec![
            Read(BUS + 0x10, 4),
            Write(BUS + 0x10, 4, 0x42),
            Read(BUS + 0x20, 2),
            Write(BUS + 0x20, 2, w20),
            Read(BUS + 0x30, 1),
            Write(BUS + 0x30, 1, b30),
            Read(BUS + 0x10, 4),
            Write(BUS + 0x10, 4, 0x47),
            Read(BUS + 0x40, 4),
            Write(BUS + 0x40, 4, 0xCAFE),
            Read(BUS + 0x50, 1),
            Read(BUS + 0x60, 4),
            Write(BUS + 0x60, 4, d60),
        ]
    );
    assert_eq!(m.mem.read_u32(ram).unwrap(), 0x42);
    assert_eq!(
        m.mem.read_u32(ram + 4).unwrap() as u64,
        fresh.value(BUS + 0x40, 4)
    );
}

#[test]
fn read_modify_write_x86() {
    read_modify_write(Arch::X86);
}

#[test]
fn read_modify_write_x64() {
    read_modify_write(Arch::X64);
}

/// movs/stos/lods on MMIO, forward and backward, with and without rep: one access per element.
#[test]
fn string_instructions_x64() {
    let (mut m, dev, va, ram) = setup(Arch::X64);
    run_with(&mut m, va, ram, |a| {
        a.push(rsi)?;
        a.push(rdi)?;
        a.cld()?;
        a.lea(rsi, ptr(rbx + 0x100))?;
        a.mov(rdi, rbp)?;
        a.mov(ecx, 4)?;
        a.rep().movsd()?;
        a.lea(rdi, ptr(rbx + 0x200))?;
        a.mov(eax, 0xBEEF)?;
        a.mov(ecx, 3)?;
        a.rep().stosw()?;
        a.lea(rsi, ptr(rbx + 0x300))?;
        a.lodsb()?;
        a.mov(byte_ptr(rbp + 0x40), al)?;
        a.mov(rsi, rbp)?;
        a.lea(rdi, ptr(rbx + 0x400))?;
        a.movsb()?;
        a.lea(rsi, ptr(rbx + 0x600))?;
        a.lea(rdi, ptr(rbp + 0x100))?;
        a.mov(ecx, 2)?;
        a.rep().movsq()?;
        a.pop(rdi)?;
        a.pop(rsi)?;
        Ok(())
    });
    let fresh = Device::default();
    let mut want: Vec<Access> = (0..4).map(|k| Read(BUS + 0x100 + 4 * k, 4)).collect();
    want.extend((0..3).map(|k| Write(BUS + 0x200 + 2 * k, 2, 0xBEEF)));
    want.push(Read(BUS + 0x300, 1));
    want.push(Write(BUS + 0x400, 1, fresh.value(BUS + 0x100, 1)));
    want.push(Read(BUS + 0x600, 8));
    want.push(Read(BUS + 0x608, 8));
    assert_eq!(dev.take_log(), want);
    for k in 0..4 {
        assert_eq!(
            m.mem.read_u32(ram + 4 * k).unwrap() as u64,
            fresh.value(BUS + 0x100 + 4 * k, 4)
        );
    }
    assert_eq!(
        m.mem.read_u8(ram + 0x40).unwrap() as u64,
        fresh.value(BUS + 0x300, 1)
    );
    assert_eq!(
        m.mem.read_u64(ram + 0x108).unwrap(),
        fresh.value(BUS + 0x608, 8)
    );
    assert_eq!(m.cpu.regs[Reg::Rcx as usize], 0);
}

/// As [`string_instructions_x64`], plus a backward `rep movsw`.
#[test]
fn string_instructions_x86() {
    let arch = Arch::X86;
    let (mut m, dev, va, ram) = setup(arch);
    run_with(&mut m, va, ram, |a| {
        a.push(esi)?;
        a.push(edi)?;
        a.cld()?;
        a.lea(esi, ptr(ebx + 0x100))?;
        a.mov(edi, ebp)?;
        a.mov(ecx, 4)?;
        a.rep().movsd()?;
        a.lea(edi, ptr(ebx + 0x200))?;
        a.mov(eax, 0xBEEF)?;
        a.mov(ecx, 3)?;
        a.rep().stosw()?;
        a.lea(esi, ptr(ebx + 0x300))?;
        a.lodsb()?;
        a.mov(byte_ptr(ebp + 0x40), al)?;
        a.mov(esi, ebp)?;
        a.lea(edi, ptr(ebx + 0x400))?;
        a.movsb()?;
        // Backwards: std; rep movsw from MMIO.
        a.std()?;
        a.lea(esi, ptr(ebx + 0x502))?;
        a.lea(edi, ptr(ebp + 0x82))?;
        a.mov(ecx, 2)?;
        a.rep().movsw()?;
        a.cld()?;
        a.pop(edi)?;
        a.pop(esi)?;
        Ok(())
    });
    let fresh = Device::default();
    let mut want: Vec<Access> = (0..4).map(|k| Read(BUS + 0x100 + 4 * k, 4)).collect();
    want.extend((0..3).map(|k| Write(BUS + 0x200 + 2 * k, 2, 0xBEEF)));
    want.push(Read(BUS + 0x300, 1));
    want.push(Write(BUS + 0x400, 1, fresh.value(BUS + 0x100, 1)));
    want.push(Read(BUS + 0x502, 2));
    want.push(Read(BUS + 0x500, 2));
    assert_eq!(dev.take_log(), want);
    for k in 0..4 {
        assert_eq!(
            m.mem.read_u32(ram + 4 * k).unwrap() as u64,
            fresh.value(BUS + 0x100 + 4 * k, 4)
        );
    }
    assert_eq!(
        m.mem.read_u32(ram + 0x80).unwrap() as u64,
        fresh.value(BUS + 0x500, 4)
    );
}

/// A driver polling a status register: `cmp [reg], imm` fused with `jne` until the device
/// reports done, then `push [reg]` / `pop [reg]` and SSE 16-byte accesses.
fn poll_loop(arch: Arch) {
    #[derive(Clone, Default)]
    struct Counter(Rc<RefCell<Vec<Access>>>);
    impl Mmio for Counter {
        fn mmio_read(&mut self, addr: u64, size: u8) -> u64 {
            let mut log = self.0.borrow_mut();
            log.push(Read(addr, size));
            log.len() as u64
        }
        fn mmio_write(&mut self, addr: u64, size: u8, value: u64) {
            self.0.borrow_mut().push(Write(addr, size, value));
        }
    }
    let mut m = machine(arch);
    let dev = Counter::default();
    m.set_mmio(Box::new(dev.clone()));
    let va = m.mem.alloc_mmio(PAGE_SIZE, BUS + 0x100).unwrap();
    assert_eq!(va % PAGE_SIZE, 0x100);
    assert_eq!(m.mem.mmio_address(va + 8), Some(BUS + 0x108));
    let ram = data(&mut m, PAGE_SIZE);
    run_with(&mut m, va, ram, |a| {
        let mut again = a.create_label();
        a.set_label(&mut again)?;
        a.cmp(dword_ptr(io(arch, 4)), 5)?;
        a.jne(again)?;
        a.push(dword_ptr_or_q(arch, io(arch, 8)))?;
        a.pop(dword_ptr_or_q(arch, io(arch, 12)))?;
        a.movdqu(xmm0, xmmword_ptr(io(arch, 0x20)))?;
        a.movups(xmmword_ptr(io(arch, 0x40)), xmm0)?;
        Ok(())
    });
    let n = if arch == Arch::X64 { 8 } else { 4 };
    let mut want: Vec<Access> = (0..5).map(|_| Read(BUS + 0x104, 4)).collect();
    want.push(Read(BUS + 0x108, n));
    want.push(Write(BUS + 0x10C, n, 6));
    want.push(Read(BUS + 0x120, 8));
    want.push(Read(BUS + 0x128, 8));
    want.push(Write(BUS + 0x140, 8, 8));
    want.push(Write(BUS + 0x148, 8, 9));
    assert_eq!(*dev.0.borrow(), want);
}

fn dword_ptr_or_q(arch: Arch, m: AsmMemoryOperand) -> AsmMemoryOperand {
    match arch {
        Arch::X64 => qword_ptr(m),
        Arch::X86 => dword_ptr(m),
    }
}

#[test]
fn polling_loop_push_pop_and_sse_x86() {
    poll_loop(Arch::X86);
}

#[test]
fn polling_loop_push_pop_and_sse_x64() {
    poll_loop(Arch::X64);
}

fn fetch_faults(arch: Arch) {
    let (mut m, dev, va, _ram) = setup(arch);
    let code = load(&mut m, |a| {
        match arch {
            Arch::X64 => {
                a.mov(rax, va + 0x10)?;
                a.call(rax)?;
            }
            Arch::X86 => {
                a.mov(eax, (va + 0x10) as u32)?;
                a.call(eax)?;
            }
        }
        a.ret()
    });
    m.prepare_guest_call(code, CallConv::Cdecl, &[]).unwrap();
    match m.run_limited(1000) {
        Some(Exit::Fault(f)) => {
            assert_eq!(
                f.kind,
                FaultKind::PageFault {
                    addr: va + 0x10,
                    write: false
                }
            );
            assert_eq!(f.rip, va + 0x10);
        }
        other => panic!("expected a fetch fault, got {other:?}"),
    }
    assert!(dev.take_log().is_empty());
}

#[test]
fn instruction_fetch_from_mmio_faults_x86() {
    fetch_faults(Arch::X86);
}

#[test]
fn instruction_fetch_from_mmio_faults_x64() {
    fetch_faults(Arch::X64);
}

/// An access running off the end of the MMIO window into unmapped memory faults without reaching
/// the device; so does any access once the window is unmapped.
fn crossing_and_unmapped(arch: Arch) {
    let (mut m, dev, va, ram) = setup(arch);
    let code = load(&mut m, |a| {
        a.mov(eax, dword_ptr(io(arch, 2 * PAGE_SIZE as i32 - 2)))?;
        a.ret()
    });
    m.prepare_guest_call(code, CallConv::Cdecl, &[]).unwrap();
    m.cpu.regs[Reg::Rbx as usize] = va;
    match m.run_limited(1000) {
        Some(Exit::Fault(f)) => assert!(
            matches!(f.kind, FaultKind::PageFault { write: false, .. }),
            "{f}"
        ),
        other => panic!("expected a fault, got {other:?}"),
    }
    assert!(dev.take_log().is_empty());

    m.mem.unmap_mmio(va, 2 * PAGE_SIZE).unwrap();
    assert_eq!(m.mem.mmio_address(va), None);
    assert!(!m.mem.is_mapped(va, 1));
    let code = load(&mut m, |a| {
        a.add(dword_ptr(io(arch, 0x10)), 1)?;
        a.ret()
    });
    m.prepare_guest_call(code, CallConv::Cdecl, &[]).unwrap();
    m.cpu.regs[Reg::Rbx as usize] = va;
    match m.run_limited(1000) {
        Some(Exit::Fault(f)) => assert_eq!(
            f.kind,
            FaultKind::PageFault {
                addr: va + 0x10,
                write: true
            }
        ),
        other => panic!("expected a fault, got {other:?}"),
    }
    assert!(dev.take_log().is_empty());
    let _ = ram;
}

#[test]
fn crossing_and_unmapped_accesses_fault_x86() {
    crossing_and_unmapped(Arch::X86);
}

#[test]
fn crossing_and_unmapped_accesses_fault_x64() {
    crossing_and_unmapped(Arch::X64);
}

/// Without an MMIO backend an MMIO page reads as all ones (an empty bus) and ignores writes.
fn no_backend(arch: Arch) {
    let mut m = machine(arch);
    let va = m.mem.alloc_mmio(PAGE_SIZE, BUS).unwrap();
    let ram = data(&mut m, PAGE_SIZE);
    run_with(&mut m, va, ram, |a| {
        a.mov(dword_ptr(io(arch, 0)), 0)?;
        a.mov(eax, dword_ptr(io(arch, 0)))?;
        a.mov(dword_ptr(mem(arch, 0)), eax)?;
        a.mov(ax, word_ptr(io(arch, 0)))?;
        a.mov(word_ptr(mem(arch, 4)), ax)?;
        Ok(())
    });
    assert_eq!(m.mem.read_u32(ram).unwrap(), 0xFFFF_FFFF);
    assert_eq!(m.mem.read_u32(ram + 4).unwrap(), 0xFFFF);
}

#[test]
fn no_backend_reads_all_ones_x86() {
    no_backend(Arch::X86);
}

#[test]
fn no_backend_reads_all_ones_x64() {
    no_backend(Arch::X64);
}

/// The host side: plain accessors fail on MMIO pages, `read_mem`/`write_mem` reach the device (and
/// RAM), the mapping API refuses overlaps, `protect` refuses MMIO, and the allocator skips it.
#[test]
fn host_side_api() {
    let (mut m, dev, va, ram) = setup(Arch::X64);
    assert_eq!(
        m.mem.read_u32(va + 4),
        Err(MemFault {
            addr: va + 4,
            write: false
        })
    );
    assert!(m.mem.write_u32(va + 4, 1).is_err());
    assert!(m.mem.read_vec(va, 16).is_err());
    assert!(m.mem.is_mapped(va, 2 * PAGE_SIZE));
    assert!(dev.take_log().is_empty());

    assert_eq!(
        m.read_mem(va + 4, 4),
        Ok(Device::default().value(BUS + 4, 4))
    );
    m.write_mem(va + 0x1008, 2, 0x1_2345).unwrap();
    assert!(m.read_mem(va, 3).is_err());
    assert_eq!(
        dev.take_log(),
        vec![Read(BUS + 4, 4), Write(BUS + 0x1008, 2, 0x2345)]
    );
    m.write_mem(ram, 8, 0x1122_3344_5566_7788).unwrap();
    assert_eq!(m.read_mem(ram + 4, 4), Ok(0x1122_3344));
    assert!(dev.take_log().is_empty());

    // Overlapping mappings are refused; so is unmapping RAM as MMIO, or protecting MMIO.
    assert!(m.mem.map_mmio(va + PAGE_SIZE, PAGE_SIZE, 0).is_err());
    assert!(m.mem.map_mmio(ram, PAGE_SIZE, 0).is_err());
    assert!(m.mem.unmap_mmio(ram, PAGE_SIZE).is_err());
    assert!(m.mem.unmap_mmio(va, 3 * PAGE_SIZE).is_err());
    assert!(m.mem.protect(va, PAGE_SIZE, Prot::READ).is_err());
    assert_eq!(m.mem.mmio_address(va + 0x1FFF), Some(BUS + 0x1FFF));
    // The allocator does not hand out MMIO pages.
    let next = m.mem.alloc(PAGE_SIZE, Prot::READ).unwrap();
    assert!(next >= va + 2 * PAGE_SIZE || next + PAGE_SIZE <= va);

    // Mapping at a fixed address: linear from the given bus address, page part included.
    let fixed = m.mem.base() + 0x0100_0000;
    m.mem.map_mmio(fixed + 0x10, 0x20, 0x1_0000_0010).unwrap();
    assert_eq!(m.mem.mmio_address(fixed), Some(0x1_0000_0000));
    assert_eq!(m.mem.mmio_address(fixed + 0xFFF), Some(0x1_0000_0FFF));
    assert_eq!(m.mem.mmio_address(fixed + PAGE_SIZE), None);
    // A plain map over MMIO turns it back into RAM.
    m.mem
        .map(fixed, PAGE_SIZE, Prot::READ | Prot::WRITE)
        .unwrap();
    assert_eq!(m.mem.mmio_address(fixed), None);
    assert_eq!(m.mem.read_u32(fixed), Ok(0));
}
