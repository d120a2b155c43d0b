//! The two worlds (native and guest), test cases, outcomes and their comparison.
//!
//! Every case runs in two address spaces laid out alike: a code page, a data region with an unmapped
//! guard page on each side and a stack region, all at fixed offsets from a per-world base. The guest
//! base is the start of dbt's guest window; the native base is a free user address (on x86-32 both are
//! the same, 0xC000_0000, so 32-bit pointers are identical in both worlds). Register values that point
//! into the regions are compared relative to the world's base; everything else bit for bit.

use dbt::Arch;
use iced_x86::{
    BlockEncoder, BlockEncoderOptions, Code, Decoder, DecoderOptions, FastFormatter, FlowControl,
    Instruction, InstructionBlock, OpKind, Register, RflagsBits,
};

/// Offset of the code page from a world's base.
pub const CODE_OFF: u64 = 0x10_0000;
/// Size of the code page.
pub const CODE_LEN: usize = 0x1000;
/// Offset of the data region (unmapped guard pages on both sides).
pub const DATA_OFF: u64 = 0x20_0000;
/// Size of the data region.
pub const DATA_LEN: usize = 0x2000;
/// Offset of the stack region (unmapped guard pages on both sides).
pub const STACK_OFF: u64 = 0x30_0000;
/// Size of the stack region.
pub const STACK_LEN: usize = 0x2000;
/// Initial stack pointer, relative to the stack region.
pub const RSP_OFF: i64 = 0x1000;
/// Offset ranges (from a world's base) whose values are pointers into the case's regions: the
/// regions with some slack (pointers computed from them may run a little outside).
const POINTER_RANGES: [(u64, u64); 3] = [
    (CODE_OFF, CODE_OFF + CODE_LEN as u64 + 0x100),
    (DATA_OFF - 0x1_0000, DATA_OFF + DATA_LEN as u64 + 0x1_0000),
    (
        STACK_OFF - 0x2_0000,
        STACK_OFF + STACK_LEN as u64 + 0x1_0000,
    ),
];

/// Status flags (EFLAGS layout).
pub const CF: u64 = 1;
pub const PF: u64 = 4;
pub const AF: u64 = 0x10;
pub const ZF: u64 = 0x40;
pub const SF: u64 = 0x80;
pub const DF: u64 = 0x400;
pub const OF: u64 = 0x800;
pub const STATUS: u64 = CF | PF | AF | ZF | SF | OF;

/// Base of the guest world: the start of dbt's guest window.
pub fn guest_base(arch: Arch) -> u64 {
    match arch {
        Arch::X86 => 0xC000_0000,
        Arch::X64 => 0xFFFF_F780_0000_0000,
    }
}

/// Base of the native world: a free user address above 4 GiB on x64 (so that no 32-bit value
/// looks like a pointer), the same as the guest base on x86-32.
pub fn native_base(arch: Arch) -> u64 {
    match arch {
        Arch::X86 => 0xC000_0000,
        Arch::X64 => 0x3c5a_0000_0000,
    }
}

/// Number of general purpose registers of an architecture.
pub fn gpr_count(arch: Arch) -> usize {
    match arch {
        Arch::X86 => 8,
        Arch::X64 => 16,
    }
}

/// Number of XMM registers of an architecture.
pub fn xmm_count(arch: Arch) -> usize {
    gpr_count(arch)
}

/// Width mask of a register of an architecture.
pub fn reg_mask(arch: Arch) -> u64 {
    match arch {
        Arch::X86 => 0xffff_ffff,
        Arch::X64 => u64::MAX,
    }
}

/// Register names for messages.
pub const REG_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

/// An initial register value: plain, or a pointer into the data or stack region (resolved per world).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Val {
    /// The same bits in both worlds.
    Raw(u64),
    /// Data region start + offset.
    Data(i64),
    /// Stack region start + offset.
    Stack(i64),
}

impl Val {
    /// The value in the world with base `base`.
    pub fn at(self, arch: Arch, base: u64) -> u64 {
        let v = match self {
            Val::Raw(v) => v,
            Val::Data(o) => (base + DATA_OFF).wrapping_add(o as u64),
            Val::Stack(o) => (base + STACK_OFF).wrapping_add(o as u64),
        };
        v & reg_mask(arch)
    }
}

/// A value as seen from its world: an offset from the base when it points into the regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    Raw(u64),
    Rel(u64),
}

/// Normalizes `v` of the world with base `base`.
pub fn norm(arch: Arch, v: u64, base: u64) -> Norm {
    let v = v & reg_mask(arch);
    let d = v.wrapping_sub(base);
    if POINTER_RANGES
        .iter()
        .any(|(lo, hi)| (*lo..*hi).contains(&d))
    {
        Norm::Rel(d)
    } else {
        Norm::Raw(v)
    }
}

/// Small, fast, reproducible PRNG (xorshift64*).
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `pct`%.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    /// A random element.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// A value for an operand: edge values (0, 1, -1, sign boundaries of every width) often, random
    /// bits otherwise.
    pub fn value(&mut self) -> u64 {
        const EDGES: [u64; 20] = [
            0,
            1,
            2,
            0x7f,
            0x80,
            0xff,
            0x7fff,
            0x8000,
            0xffff,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            0x7fff_ffff_ffff_ffff,
            0x8000_0000_0000_0000,
            u64::MAX,
            0x1_0000_0000,
            u64::MAX - 1,
            0xffff_ff80,
            0x0000_0001_0000_0001,
            0xffff_ffff_ffff_ff7f,
        ];
        match self.below(8) {
            0 | 1 => EDGES[self.below(EDGES.len() as u64) as usize],
            2 => EDGES[self.below(EDGES.len() as u64) as usize] ^ (1 << self.below(64)),
            3 => self.next() & 0xff,
            4 => (self.next() as i8) as i64 as u64,
            _ => self.next(),
        }
    }

    /// A shift or rotate count: the interesting ones (0, 1, width-1, width, > width) often.
    pub fn count(&mut self) -> u64 {
        const COUNTS: [u64; 20] = [
            0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 18, 31, 32, 33, 63, 64, 65, 0x80, 0xff, 0x3f,
        ];
        if self.chance(70) {
            self.pick(&COUNTS)
        } else {
            self.next() & 0xff
        }
    }

    /// Fills `buf` with random bytes, sprinkled with edge-value words.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = if self.chance(10) {
                self.value()
            } else {
                self.next()
            };
            chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// One test case: a snippet (expressed in guest addresses) and the initial machine state.
#[derive(Clone)]
pub struct Case {
    pub arch: Arch,
    /// The snippet; a rip-relative or absolute memory operand names a guest address.
    pub instrs: Vec<Instruction>,
    pub regs: [Val; 16],
    pub flags: u64,
    pub xmm: [u128; 16],
    pub data: Vec<u8>,
    pub stack: Vec<u8>,
    /// Status flags left undefined by the snippet (not compared unless strict).
    pub undefined: u64,
    /// Status flags not compared when both worlds fault (an interrupted `rep cmps` has done some
    /// iterations; the host reports the flags from before the instruction, dbt those of the last
    /// completed iteration).
    pub fault_undefined: u64,
}

impl Case {
    /// A case with random registers, flags, XMM registers and memory; rsp points into the stack.
    pub fn random(arch: Arch, rng: &mut Rng) -> Case {
        let mut regs = [Val::Raw(0); 16];
        for (k, r) in regs.iter_mut().enumerate() {
            *r = if k < gpr_count(arch) {
                Val::Raw(rng.value() & reg_mask(arch))
            } else {
                Val::Raw(0)
            };
        }
        regs[4] = Val::Stack(RSP_OFF);
        let mut xmm = [0u128; 16];
        for x in xmm.iter_mut().take(xmm_count(arch)) {
            *x = (rng.value() as u128) << 64 | rng.value() as u128;
        }
        let mut data = vec![0; DATA_LEN];
        rng.fill(&mut data);
        let mut stack = vec![0; STACK_LEN];
        rng.fill(&mut stack);
        Case {
            arch,
            instrs: Vec::new(),
            regs,
            flags: 0x202 | (rng.next() & STATUS),
            xmm,
            data,
            stack,
            undefined: 0,
            fault_undefined: 0,
        }
    }

    /// Computes [`Case::undefined`] from the snippet: flags an instruction leaves undefined and no
    /// later instruction defines.
    ///
    /// On x64 the worlds' pointers differ in their high bits, so CF, OF, SF and ZF of arithmetic on
    /// a register holding a pointer (`add rsp, 28h`) are world-dependent and not compared either;
    /// AF and PF depend on the low bits, which agree.
    pub fn compute_undefined(&mut self) {
        let mut undef = 0u64;
        let mut pointers: Vec<bool> = self
            .regs
            .iter()
            .map(|v| !matches!(v, Val::Raw(_)))
            .collect();
        // After a branch, an instruction may be skipped: it can leave flags undefined, it cannot
        // be relied on to define them.
        let mut may_be_skipped = false;
        for i in &self.instrs {
            let (defined, u) = flag_effect(i);
            let defined = if may_be_skipped { 0 } else { defined };
            may_be_skipped |= i.flow_control() != FlowControl::Next;
            undef = (undef & !defined) | u;
            let regs: Vec<usize> = (0..i.op_count())
                .filter(|n| i.op_kind(*n) == OpKind::Register)
                .filter_map(|n| full_index(i.op_register(n)))
                .collect();
            if self.arch == Arch::X64
                && defined & (CF | OF | SF | ZF) != 0
                && regs.iter().any(|k| pointers[*k])
            {
                undef |= CF | OF | SF | ZF;
            }
            // A register written by a later instruction no longer holds the initial pointer
            // (conservatively: only plain moves of non-pointers clear it).
            if i.mnemonic() == iced_x86::Mnemonic::Mov && i.op0_kind() == OpKind::Register {
                if let (Some(d), false) = (
                    full_index(i.op0_register()),
                    regs.iter().skip(1).any(|k| pointers[*k]),
                ) {
                    pointers[d] = false;
                }
            }
        }
        self.undefined = undef;
    }

    /// Writes `bytes` into the data image at `off` (clipped to the region).
    pub fn poke_data(&mut self, off: i64, bytes: &[u8]) {
        for (k, b) in bytes.iter().enumerate() {
            let o = off + k as i64;
            if (0..DATA_LEN as i64).contains(&o) {
                self.data[o as usize] = *b;
            }
        }
    }

    /// Reads `n` (<= 8) bytes of the data image at `off` (out-of-region bytes read as zero).
    pub fn peek_data(&self, off: i64, n: usize) -> u64 {
        let mut v = 0u64;
        for k in 0..n {
            let o = off + k as i64;
            if (0..DATA_LEN as i64).contains(&o) {
                v |= (self.data[o as usize] as u64) << (8 * k);
            }
        }
        v
    }

    /// Disassembly of the snippet (at guest addresses).
    pub fn listing(&self) -> String {
        let base = guest_base(self.arch);
        let code = match encode(self, base, base + CODE_OFF + CODE_LEN as u64 - 16) {
            Ok(c) => c,
            Err(e) => return format!("<cannot encode: {e}>"),
        };
        let mut out = String::new();
        let mut fmt = FastFormatter::new();
        let bits = self.arch.bitness();
        let mut dec = Decoder::with_ip(bits, &code, base + CODE_OFF, DecoderOptions::NONE);
        for i in &mut dec {
            let start = (i.ip() - base - CODE_OFF) as usize;
            let bytes: Vec<String> = code[start..start + i.len()]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let mut text = String::new();
            fmt.format(&i, &mut text);
            out.push_str(&format!(
                "    +{start:03x}: {:<30} {text}\n",
                bytes.join(" ")
            ));
        }
        out
    }
}

/// Index (0..16) of the general purpose register holding `r`.
pub fn full_index(r: Register) -> Option<usize> {
    if !r.is_gpr() {
        return None;
    }
    let full = r.full_register();
    Some(full.number() - Register::RAX.number())
}

/// Converts iced's RflagsBits to EFLAGS bits (status flags only).
/// The status flags `i` certainly defines and those it may leave undefined, whatever its count:
/// a shift or rotate by CL may shift by 0 and change nothing, and a rotate by an immediate other
/// than 1 leaves OF undefined even where the rotation is a whole turn (an 8-bit rcl by 9 changes
/// OF on AMD, not on Intel).
pub fn flag_effect(i: &Instruction) -> (u64, u64) {
    use iced_x86::Mnemonic as M;
    let mut undefined = eflags_of(i.rflags_undefined());
    let mut defined = eflags_of(i.rflags_modified()) & !undefined;
    let mn = i.mnemonic();
    let shift = matches!(
        mn,
        M::Shl | M::Sal | M::Shr | M::Sar | M::Rol | M::Ror | M::Rcl | M::Rcr | M::Shld | M::Shrd
    );
    if shift {
        let last = i.op_count() - 1;
        if i.op_kind(last) == OpKind::Register {
            defined = 0;
        } else if matches!(mn, M::Rol | M::Ror | M::Rcl | M::Rcr) && i.immediate(last) & 0x1f > 1 {
            defined &= !OF;
            undefined |= OF;
        }
    }
    (defined, undefined)
}

pub fn eflags_of(bits: u32) -> u64 {
    let mut f = 0;
    for (iced, ef) in [
        (RflagsBits::OF, OF),
        (RflagsBits::SF, SF),
        (RflagsBits::ZF, ZF),
        (RflagsBits::AF, AF),
        (RflagsBits::CF, CF),
        (RflagsBits::PF, PF),
        (RflagsBits::DF, DF),
    ] {
        if bits & iced != 0 {
            f |= ef;
        }
    }
    f
}

/// Encodes the snippet for the world with base `base`, followed by a jump to `exit`.
pub fn encode(case: &Case, base: u64, exit: u64) -> Result<Vec<u8>, String> {
    let g = guest_base(case.arch);
    let mut v: Vec<Instruction> = case
        .instrs
        .iter()
        .map(|i| {
            let mut i = *i;
            let absolute64 = case.arch == Arch::X64
                && i.memory_base() == Register::None
                && i.memory_index() == Register::None
                && i.memory_displ_size() == 8
                && !matches!(i.segment_prefix(), Register::FS | Register::GS)
                && (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory);
            if i.is_ip_rel_memory_operand() || absolute64 {
                let target = i.memory_displacement64().wrapping_sub(g).wrapping_add(base);
                i.set_memory_displacement64(target);
            }
            i
        })
        .collect();
    let jmp = match case.arch {
        Arch::X86 => Code::Jmp_rel32_32,
        Arch::X64 => Code::Jmp_rel32_64,
    };
    v.push(Instruction::with_branch(jmp, exit).map_err(|e| e.to_string())?);
    let r = BlockEncoder::encode(
        case.arch.bitness(),
        InstructionBlock::new(&v, base + CODE_OFF),
        BlockEncoderOptions::NONE,
    )
    .map_err(|e| e.to_string())?;
    if r.code_buffer.len() > CODE_LEN {
        return Err("snippet too long".into());
    }
    Ok(r.code_buffer)
}

/// An exception, as far as both worlds can express it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exc {
    None,
    Divide,
    Page { addr: Norm, write: bool },
    GeneralProtection,
    InvalidOpcode,
    Other(String),
}

/// The end state of one world.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub regs: [u64; 16],
    pub flags: u64,
    pub xmm: [u128; 16],
    /// Address of the faulting instruction (only meaningful with an exception).
    pub rip: u64,
    pub exc: Exc,
    pub data: Vec<u8>,
    pub stack: Vec<u8>,
}

/// Status flags still live before the instruction at `rip` of the guest code `gcode`: the ones the
/// rest of the snippet may read before overwriting them. Only those are compared at a fault: dbt
/// elides the flag computation of an instruction whose flags are all overwritten later in the
/// block, so a fault in between may show stale values for them (see `dbt/src/liveness.rs`).
fn live_before(arch: Arch, gcode: &[u8], rip: u64) -> u64 {
    use iced_x86::Mnemonic as M;
    let base = guest_base(arch) + CODE_OFF;
    let instrs: Vec<Instruction> =
        Decoder::with_ip(arch.bitness(), gcode, base, DecoderOptions::NONE)
            .into_iter()
            .collect();
    let Some(k) = instrs.iter().position(|i| i.ip() == rip) else {
        return STATUS;
    };
    let mut live = STATUS;
    // The last instruction is the jump to the exit, after which every flag is live.
    for i in instrs[k..instrs.len().saturating_sub(1)].iter().rev() {
        let variable = matches!(
            i.mnemonic(),
            M::Shl
                | M::Sal
                | M::Shr
                | M::Sar
                | M::Rol
                | M::Ror
                | M::Rcl
                | M::Rcr
                | M::Shld
                | M::Shrd
        ) || i.has_rep_prefix()
            || i.has_repne_prefix();
        let kill = if variable {
            0
        } else {
            eflags_of(i.rflags_modified()) & STATUS
        };
        live = (live & !kill) | (eflags_of(i.rflags_read()) & STATUS);
    }
    live
}

/// Differences between the native and guest outcomes of `case`; empty if they agree. `gcode` is
/// the snippet as encoded for the guest.
pub fn diff(
    case: &Case,
    gcode: &[u8],
    native: &Outcome,
    guest: &Outcome,
    strict: bool,
) -> Vec<String> {
    let arch = case.arch;
    let (nb, gb) = (native_base(arch), guest_base(arch));
    let mut out = Vec::new();
    if native.exc != guest.exc {
        out.push(format!(
            "exception: native {:?}, dbt {:?}",
            native.exc, guest.exc
        ));
    }
    if native.exc != Exc::None && guest.exc != Exc::None {
        let (n, g) = (norm(arch, native.rip, nb), norm(arch, guest.rip, gb));
        if n != g {
            out.push(format!("faulting rip: native {n:x?}, dbt {g:x?}"));
        }
    }
    for (k, name) in REG_NAMES.iter().enumerate().take(gpr_count(arch)) {
        let (n, g) = (
            norm(arch, native.regs[k], nb),
            norm(arch, guest.regs[k], gb),
        );
        if n != g {
            out.push(format!(
                "{name}: native {:#x}, dbt {:#x}",
                native.regs[k] & reg_mask(arch),
                guest.regs[k] & reg_mask(arch)
            ));
        }
    }
    let mut mask = if strict {
        STATUS | DF
    } else {
        (STATUS & !case.undefined) | DF
    };
    if native.exc != Exc::None && guest.exc != Exc::None {
        mask &= !case.fault_undefined;
        if !strict {
            mask &= live_before(arch, gcode, guest.rip) | DF;
        }
    }
    if native.flags & mask != guest.flags & mask {
        out.push(format!(
            "flags: native {:#x}, dbt {:#x} (compared {mask:#x}, differing {:#x})",
            native.flags & mask,
            guest.flags & mask,
            (native.flags ^ guest.flags) & mask
        ));
    }
    for k in 0..xmm_count(arch) {
        if native.xmm[k] != guest.xmm[k] {
            out.push(format!(
                "xmm{k}: native {:032x}, dbt {:032x}",
                native.xmm[k], guest.xmm[k]
            ));
        }
    }
    for (name, n, g) in [
        ("data", &native.data, &guest.data),
        ("stack", &native.stack, &guest.stack),
    ] {
        if let Some(d) = mem_diff(arch, n, g) {
            out.push(format!("{name} memory: {d}"));
        }
    }
    out
}

/// First difference between two memory images (x64 pointers to the regions compare relative).
fn mem_diff(arch: Arch, native: &[u8], guest: &[u8]) -> Option<String> {
    let (nb, gb) = (native_base(arch), guest_base(arch));
    let mut k = 0;
    while k < native.len() {
        if native[k] == guest[k] {
            k += 1;
            continue;
        }
        let q = k & !7;
        if arch == Arch::X64 && q + 8 <= native.len() {
            let n = u64::from_le_bytes(native[q..q + 8].try_into().unwrap());
            let g = u64::from_le_bytes(guest[q..q + 8].try_into().unwrap());
            if norm(arch, n, nb) == norm(arch, g, gb) {
                k = q + 8;
                continue;
            }
        }
        let end = (k + 8).min(native.len());
        return Some(format!(
            "offset {k:#x}: native {:02x?}, dbt {:02x?}",
            &native[k..end],
            &guest[k..end]
        ));
    }
    None
}
