//! IOCTL target: a sequence of requests into ioctl.sys through the Win32-shaped I/O API the host
//! offers (DeviceIoControl with any control code, so any transfer method, input and output
//! lengths and contents; WriteFile; ReadFile; CloseHandle and a stale handle; reopening), on the
//! x86-32 and the x64 build of the driver. The driver may fail requests, and a guest fault is
//! acceptable if it comes back as a clean error (counted); the host must not panic or hang, must
//! release every IRP and every I/O-manager allocation after each request, and must unload the
//! driver cleanly. Both builds of the same source must answer every request the same.

use std::path::PathBuf;

use dbt::Arch;
use loader::{DriverHost, HostError};
use ntoskrnl::status;

use crate::mutate::Havoc;
use crate::rng::Rng;

/// ioctl.sys's control codes (`tests/drivers/common.h`) and neighbours, picked by the low 3 bits
/// of an encoded request's selector.
const KNOWN: [u32; 8] = [
    0x0022_2000, // REVERSE, METHOD_BUFFERED
    0x0022_2005, // COUNT, METHOD_IN_DIRECT
    0x0022_200A, // FILL, METHOD_OUT_DIRECT
    0x0022_200F, // MULTIPLY, METHOD_NEITHER
    0x0022_2010, // SELFTEST, METHOD_BUFFERED
    0x0022_2014, // the next function code: unknown to the driver
    0x0022_2804, // another test driver's PING
    0x0022_3FFF, // unknown, METHOD_NEITHER
];
const SELFTEST: u32 = 0x0022_2010;
/// Selector meaning "a raw 32-bit code follows".
const RAW: u8 = 0xFF;
/// Longest input or output buffer of one request (three pages and a bit: page crossings).
pub const MAX_LEN: usize = 0x3100;
/// Most requests in one input.
pub const MAX_OPS: usize = 12;
const DEVICE: &str = "\\\\.\\IcaIoctl";
const DRIVER: &str = "ioctl.sys";

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// DeviceIoControl with an output buffer of `out_len` bytes of `fill`.
    Ioctl {
        /// IoControlCode.
        code: u32,
        /// Input buffer.
        input: Vec<u8>,
        /// Output buffer length.
        out_len: usize,
        /// Initial output buffer contents (what IN_DIRECT and NEITHER drivers see).
        fill: u8,
    },
    /// WriteFile.
    Write(Vec<u8>),
    /// ReadFile of this many bytes.
    Read(usize),
    /// CloseHandle, then open the device again.
    Reopen,
    /// CloseHandle; the requests after it use the stale handle until a `Reopen`.
    Close,
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn len(&mut self) -> usize {
        self.u16() as usize % (MAX_LEN + 1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let take = n.min(self.0.len());
        let mut out = self.0[..take].to_vec();
        self.0 = &self.0[take..];
        out.resize(n, 0);
        out
    }
}

/// The requests an input stands for. Each starts with a kind byte (mod 8: 0-3 DeviceIoControl, 4
/// write, 5 read, 6 reopen, 7 close). DeviceIoControl: selector (low 3 bits: a known code; bits
/// 3-4 XORed into the transfer method, bits 5-6 into the access bits; 0xFF: a raw u32 code
/// follows), input length and output length (u16 LE, modulo `MAX_LEN + 1`), the output fill
/// byte, then the input bytes. Write: length, bytes. Read: length. Missing bytes read as zero.
pub fn decode(data: &[u8]) -> Vec<Op> {
    let mut c = Cursor(data);
    let mut ops = Vec::new();
    while !c.0.is_empty() && ops.len() < MAX_OPS {
        ops.push(match c.u8() % 8 {
            0..=3 => {
                let sel = c.u8();
                let code = if sel == RAW {
                    c.u32()
                } else {
                    KNOWN[sel as usize & 7] ^ (sel as u32 >> 3 & 3) ^ ((sel as u32 >> 5 & 3) << 14)
                };
                let in_len = c.len();
                let out_len = c.len();
                let fill = c.u8();
                Op::Ioctl {
                    code,
                    input: c.bytes(in_len),
                    out_len,
                    fill,
                }
            }
            4 => {
                let n = c.len();
                Op::Write(c.bytes(n))
            }
            5 => Op::Read(c.len()),
            6 => Op::Reopen,
            _ => Op::Close,
        });
    }
    ops
}

/// The input that decodes to `ops` (lengths must be at most [`MAX_LEN`]).
pub fn encode(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    let len = |out: &mut Vec<u8>, n: usize| out.extend((n as u16).to_le_bytes());
    for op in ops {
        match op {
            Op::Ioctl {
                code,
                input,
                out_len,
                fill,
            } => {
                out.push(0);
                match KNOWN.iter().position(|k| k == code) {
                    Some(i) => out.push(i as u8),
                    None => {
                        out.push(RAW);
                        out.extend(code.to_le_bytes());
                    }
                }
                len(&mut out, input.len());
                len(&mut out, *out_len);
                out.push(*fill);
                out.extend(input);
            }
            Op::Write(data) => {
                out.push(4);
                len(&mut out, data.len());
                out.extend(data);
            }
            Op::Read(n) => {
                out.push(5);
                len(&mut out, *n);
            }
            Op::Reopen => out.push(6),
            Op::Close => out.push(7),
        }
    }
    out
}

/// Interesting request sequences: every known code with fitting, short, empty and page-crossing
/// buffers, write/read, a stale handle.
pub fn seeds() -> Vec<Vec<u8>> {
    let ioctl = |code: u32, input: &[u8], out_len: usize| Op::Ioctl {
        code,
        input: input.to_vec(),
        out_len,
        fill: b'-',
    };
    let mut two = 7u32.to_le_bytes().to_vec();
    two.extend(9u32.to_le_bytes());
    let sequences = vec![
        vec![ioctl(KNOWN[0], b"abcdef", 6), ioctl(KNOWN[0], b"abcdef", 3)],
        vec![
            ioctl(KNOWN[0], &[7; 0x1800], 0x3000),
            ioctl(KNOWN[0], b"", 0),
        ],
        vec![ioctl(KNOWN[1], b"-", 12), ioctl(KNOWN[1], b"", 12)],
        vec![ioctl(KNOWN[1], b"x", 0x2100), ioctl(KNOWN[1], b"-", 0)],
        vec![
            ioctl(KNOWN[2], &5u32.to_le_bytes(), 300),
            ioctl(KNOWN[2], b"ab", 8),
        ],
        vec![ioctl(KNOWN[2], &[0xFF; 4], 0x3100)],
        vec![ioctl(KNOWN[3], &two, 8), ioctl(KNOWN[3], &two, 7)],
        vec![ioctl(KNOWN[3], &two[..7], 8), ioctl(KNOWN[3], b"", 0)],
        vec![ioctl(KNOWN[4], b"", 128), ioctl(KNOWN[4], b"", 127)],
        vec![ioctl(KNOWN[5], b"in", 4), ioctl(0xFFFF_FFFF, b"", 0)],
        vec![
            Op::Write(b"kept by the driver".to_vec()),
            Op::Read(64),
            Op::Read(0),
        ],
        vec![Op::Write(vec![1; 0x3000]), Op::Read(0x3100)],
        vec![
            Op::Close,
            ioctl(KNOWN[0], b"ab", 2),
            Op::Read(4),
            Op::Reopen,
            ioctl(KNOWN[0], b"ab", 2),
        ],
    ];
    sequences.iter().map(|s| encode(s)).collect()
}

const HAVOC: Havoc = Havoc {
    dict: &[
        &[0, 0],
        &[0, 1],
        &[0, 2],
        &[0, 3],
        &[0, 4],
        &[0, RAW],
        &[4],
        &[5],
        &[6],
        &[7],
        &[0x00, 0x30],
        &[0xFF, 0x0F],
    ],
    max_len: 4 * MAX_LEN,
    hot: 0,
};

/// A new input: `parent` mutated, maybe spliced with `other`.
pub fn next_input(rng: &mut Rng, parent: &[u8], other: &[u8]) -> Vec<u8> {
    HAVOC.mutate(rng, parent, other)
}

fn driver_path(arch: Arch) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/drivers/bin")
        .join(arch.name())
        .join(DRIVER)
}

/// Pool that is not the driver's: the I/O manager's and the kernel's own allocations, except
/// the driver object extensions the driver asked for (they live until the driver unloads).
fn kernel_pool(h: &DriverHost) -> u64 {
    let extensions = h.k.pool.tag_usage(ntoskrnl::io::DRIVER_EXTENSION_TAG).bytes;
    h.k.pool.live_bytes() - h.k.pool.bytes_owned_by(DRIVER) - extensions
}

/// FNV-1a, to compare outputs without keeping them.
fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Runs `ops` on a fresh host for `arch`; one line per request: status, information and output
/// hash, or the error's architecture-neutral summary.
fn session(arch: Arch, ops: &[Op]) -> Vec<String> {
    let mut h = DriverHost::new(arch).unwrap_or_else(|e| panic!("fresh driver host: {e}"));
    let baseline = h.k.pool.live_bytes();
    let driver = h
        .load_driver(&driver_path(arch))
        .unwrap_or_else(|e| panic!("loading ioctl.sys: {e}"));
    let open = |h: &mut DriverHost| match h.open(DEVICE) {
        Ok(Ok(handle)) => handle,
        other => panic!("opening {DEVICE}: {other:?}"),
    };
    let mut handle = open(&mut h);
    let mut open_handle = true;
    let steady = kernel_pool(&h);
    let mut lines = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let result = match op {
            Op::Ioctl {
                code,
                input,
                out_len,
                fill,
            } => h
                .ioctl(handle, *code, input, &vec![*fill; *out_len])
                .map(|r| {
                    // The self test's report is text about timing-dependent checks.
                    let output = if *code == SELFTEST {
                        0
                    } else {
                        hash(&r.output)
                    };
                    (r.status, r.information, output)
                }),
            Op::Write(data) => h.write(handle, data).map(|r| (r.status, r.information, 0)),
            Op::Read(n) => h
                .read(handle, *n)
                .map(|r| (r.status, r.information, hash(&r.output))),
            Op::Reopen | Op::Close => {
                // A stale handle's close must fail cleanly, too.
                let closed = h.close(handle).map(|s| (s, 0, 0));
                open_handle = *op == Op::Reopen;
                if open_handle {
                    handle = open(&mut h);
                }
                closed
            }
        };
        let line = match result {
            Ok((st, info, out)) => format!("{} {info} {out:016x}", status::name(st)),
            Err(HostError::Kernel { error, .. }) => format!("failed: {}", error.summary()),
            Err(other) => panic!("request {i} ({op:?}): unexpected error {other}"),
        };
        assert_eq!(
            h.k.io.live_irps(),
            0,
            "request {i} ({line}) left an IRP alive on {}",
            arch.name()
        );
        // The file object is the only I/O-manager allocation that outlives a request.
        if open_handle {
            assert_eq!(
                kernel_pool(&h),
                steady,
                "request {i} ({line}) leaked kernel pool on {}",
                arch.name()
            );
        }
        lines.push(line);
    }
    if open_handle {
        let closed = h.close(handle);
        assert!(
            matches!(closed, Ok(status::STATUS_SUCCESS)),
            "close: {closed:?}"
        );
    }
    if let Err(e) = h.unload_driver(&driver) {
        panic!("unloading ioctl.sys on {}: {e}", arch.name());
    }
    assert_eq!(
        h.k.pool.bytes_owned_by(DRIVER),
        0,
        "the driver freed its pool"
    );
    assert_eq!(
        h.k.pool.live_bytes(),
        baseline,
        "no allocation outlives the driver"
    );
    assert!(
        h.k.io.resolve(DEVICE).is_none(),
        "unload removed the device"
    );
    lines
}

/// The target: the requests on both architectures, which must agree. The outcome class is the
/// set of statuses and failures seen.
pub fn run(data: &[u8]) -> String {
    let ops = decode(data);
    let x86 = session(Arch::X86, &ops);
    let x64 = session(Arch::X64, &ops);
    for (i, (a, b)) in x86.iter().zip(&x64).enumerate() {
        assert_eq!(
            a, b,
            "request {i} ({:?}) answered differently on x86-32 and x64",
            ops[i]
        );
    }
    let mut classes: Vec<&str> = x64
        .iter()
        .map(|l| l.split_once(' ').map_or(l.as_str(), |(s, _)| s))
        .collect();
    classes.sort_unstable();
    classes.dedup();
    let faulted = x64.iter().any(|l| l.starts_with("failed: guest fault"));
    let kind = if faulted { "fault" } else { "ok" };
    format!("{kind} {}", classes.join(" "))
}
