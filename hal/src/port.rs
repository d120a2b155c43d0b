//! Port I/O entry points (READ_PORT_* / WRITE_PORT_*), routed to the machine's port-I/O bus just
//! as the `in`/`out` instructions are.

use ntoskrnl::export::Export;
use ntoskrnl::{export_table, KResult, Kernel};

fn read(k: &mut Kernel, port: u64, size: u8) -> u32 {
    k.m.port_read(port as u16, size)
}

fn write(k: &mut Kernel, port: u64, size: u8, value: u32) {
    k.m.port_write(port as u16, size, value)
}

fn read_port_uchar(k: &mut Kernel, port: u64) -> KResult<u8> {
    Ok(read(k, port, 1) as u8)
}

fn read_port_ushort(k: &mut Kernel, port: u64) -> KResult<u16> {
    Ok(read(k, port, 2) as u16)
}

fn read_port_ulong(k: &mut Kernel, port: u64) -> KResult<u32> {
    Ok(read(k, port, 4))
}

fn write_port_uchar(k: &mut Kernel, port: u64, value: u8) -> KResult<()> {
    write(k, port, 1, value as u32);
    Ok(())
}

fn write_port_ushort(k: &mut Kernel, port: u64, value: u16) -> KResult<()> {
    write(k, port, 2, value as u32);
    Ok(())
}

fn write_port_ulong(k: &mut Kernel, port: u64, value: u32) -> KResult<()> {
    write(k, port, 4, value);
    Ok(())
}

/// Reads `count` elements of `size` bytes from a port into guest memory.
fn read_port_buffer(k: &mut Kernel, port: u64, buffer: u64, count: u32, size: u8) -> KResult<()> {
    for i in 0..count as u64 {
        let v = read(k, port, size);
        let at = buffer + i * size as u64;
        match size {
            1 => k.m.mem.write_u8(at, v as u8)?,
            2 => k.m.mem.write_u16(at, v as u16)?,
            _ => k.m.mem.write_u32(at, v)?,
        }
    }
    Ok(())
}

/// Writes `count` elements of `size` bytes from guest memory to a port.
fn write_port_buffer(k: &mut Kernel, port: u64, buffer: u64, count: u32, size: u8) -> KResult<()> {
    for i in 0..count as u64 {
        let at = buffer + i * size as u64;
        let v = match size {
            1 => k.m.mem.read_u8(at)? as u32,
            2 => k.m.mem.read_u16(at)? as u32,
            _ => k.m.mem.read_u32(at)?,
        };
        write(k, port, size, v);
    }
    Ok(())
}

fn read_port_buffer_uchar(k: &mut Kernel, port: u64, buffer: u64, count: u32) -> KResult<()> {
    read_port_buffer(k, port, buffer, count, 1)
}
fn read_port_buffer_ushort(k: &mut Kernel, port: u64, buffer: u64, count: u32) -> KResult<()> {
    read_port_buffer(k, port, buffer, count, 2)
}
fn read_port_buffer_ulong(k: &mut Kernel, port: u64, buffer: u64, count: u32) -> KResult<()> {
    read_port_buffer(k, port, buffer, count, 4)
}
fn write_port_buffer_uchar(k: &mut Kernel, port: u64, buffer: u64, count: u32) -> KResult<()> {
    write_port_buffer(k, port, buffer, count, 1)
}
fn write_port_buffer_ushort(k: &mut Kernel, port: u64, buffer: u64, count: u32) -> KResult<()> {
    write_port_buffer(k, port, buffer, count, 2)
}
fn write_port_buffer_ulong(k: &mut Kernel, port: u64, buffer: u64, count: u32) -> KResult<()> {
    write_port_buffer(k, port, buffer, count, 4)
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall READ_PORT_UCHAR => read_port_uchar(port: u64);
    stdcall READ_PORT_USHORT => read_port_ushort(port: u64);
    stdcall READ_PORT_ULONG => read_port_ulong(port: u64);
    stdcall WRITE_PORT_UCHAR => write_port_uchar(port: u64, value: u8);
    stdcall WRITE_PORT_USHORT => write_port_ushort(port: u64, value: u16);
    stdcall WRITE_PORT_ULONG => write_port_ulong(port: u64, value: u32);
    stdcall READ_PORT_BUFFER_UCHAR => read_port_buffer_uchar(port: u64, buffer: u64, count: u32);
    stdcall READ_PORT_BUFFER_USHORT => read_port_buffer_ushort(port: u64, buffer: u64, count: u32);
    stdcall READ_PORT_BUFFER_ULONG => read_port_buffer_ulong(port: u64, buffer: u64, count: u32);
    stdcall WRITE_PORT_BUFFER_UCHAR => write_port_buffer_uchar(port: u64, buffer: u64, count: u32);
    stdcall WRITE_PORT_BUFFER_USHORT => write_port_buffer_ushort(port: u64, buffer: u64, count: u32);
    stdcall WRITE_PORT_BUFFER_ULONG => write_port_buffer_ulong(port: u64, buffer: u64, count: u32);
];
