//! The case lists: which instruction forms run, how many cases each, and how a case is generated.
//!
//! Most specs name one iced `Code` (an exact encoding form, e.g. `ADD r/m32, imm8`) and a variant
//! (register or memory operand, `lock`, segment override, rip-relative/absolute address); a generic
//! filler picks random registers, immediates (edge values often) and a memory operand pointing into
//! the data region, then per-mnemonic adjustments make the interesting cases likely (non-faulting
//! divisions, matching compare-exchange operands, shift counts 0/1/width/>width, zero bit-scan
//! sources). Other specs are hand-written snippets (string instructions, control flow, flag chains)
//! or instructions taken from the test drivers (see `drivers.rs`).

use dbt::Arch;
use iced_x86::{
    Code, Encoder, EncodingKind, FlowControl, Instruction, MemoryOperand, Mnemonic,
    OpCodeOperandKind as K, OpKind, Register,
};

use crate::harness::{
    gpr_count, guest_base, reg_mask, Case, Rng, Val, DATA_LEN, DATA_OFF, DF, OF, RSP_OFF,
    STACK_LEN, STATUS,
};

/// Which test runs a spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// Integer arithmetic, shifts, multiplication and division, bit operations.
    Integer,
    /// Data movement, exchanges, conversions, setcc/cmovcc, flag instructions.
    Data,
    /// String instructions and stack instructions.
    StringStack,
    /// SSE/SSE2.
    Sse,
    /// Branches, calls, loops and multi-instruction flag chains.
    Control,
    /// Instructions found in the test drivers.
    Drivers,
}

/// How the operands of a `Code` spec are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Variant {
    /// No register-or-memory operand.
    Plain,
    /// The r/m operand is a register.
    Reg,
    /// The r/m operand is memory ([base + index*scale + disp]).
    Mem,
    /// Memory operand with a lock prefix.
    Lock,
    /// Memory operand with an fs: (x86) or gs: (x64) override, like PCR accesses.
    Seg,
    /// rip-relative memory operand (x64).
    RipRel,
    /// Absolute memory operand (x86 [disp32], x64 moffs64).
    Abs,
}

impl Variant {
    pub fn label(self, arch: Arch) -> &'static str {
        match self {
            Variant::Plain => "",
            Variant::Reg => "reg",
            Variant::Mem => "mem",
            Variant::Lock => "lock",
            Variant::Seg => match arch {
                Arch::X86 => "fs:",
                Arch::X64 => "gs:",
            },
            Variant::RipRel => "rip-rel",
            Variant::Abs => "abs",
        }
    }
}

/// A hand-written case generator.
pub type Custom = fn(Arch, &mut Rng) -> Result<Case, String>;

/// How the cases of a spec are made.
pub enum Kind {
    /// One instruction of this encoding form with random operands.
    Code { code: Code, variant: Variant },
    /// A hand-written generator.
    Custom(Custom),
    /// An instruction from a test driver, memory operand moved into the data region.
    Driver(Box<Instruction>),
}

/// A list entry: an instruction form and how many cases of it run.
pub struct Spec {
    pub arch: Arch,
    pub group: Group,
    /// Mnemonic for the table (lowercase).
    pub mnemonic: String,
    /// Operand form for the table, e.g. `r/m32, imm8`.
    pub form: String,
    /// Variant for the table, e.g. `mem`, `lock`, `rep`.
    pub variant: String,
    /// Cases per run (times `DBT_CONFORMANCE_SOAK`).
    pub count: usize,
    pub kind: Kind,
    /// Distinguishes specs of the same form (driver samples).
    pub tag: String,
}

impl Spec {
    /// Unique name (also seeds the spec's random stream).
    pub fn name(&self) -> String {
        let mut s = format!("{}/{} {}", self.arch.name(), self.mnemonic, self.form);
        if !self.variant.is_empty() {
            s.push_str(&format!(" [{}]", self.variant));
        }
        if !self.tag.is_empty() {
            s.push_str(&format!(" {}", self.tag));
        }
        s
    }

    /// Generates one case (retrying operand choices that cannot be encoded).
    pub fn generate(&self, rng: &mut Rng) -> Result<Case, String> {
        let mut last = String::new();
        for _ in 0..50 {
            let r = match &self.kind {
                Kind::Code { code, variant } => fill(self.arch, *code, *variant, rng),
                Kind::Custom(f) => f(self.arch, rng),
                Kind::Driver(i) => crate::drivers::generate(self.arch, i, rng),
            };
            match r {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Registers by index (rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8..r15) and width.
pub const R64: [Register; 16] = [
    Register::RAX,
    Register::RCX,
    Register::RDX,
    Register::RBX,
    Register::RSP,
    Register::RBP,
    Register::RSI,
    Register::RDI,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
    Register::R12,
    Register::R13,
    Register::R14,
    Register::R15,
];

/// The register of index `idx` and width `size` (1 = the low byte).
pub fn gpr(size: usize, idx: usize) -> Register {
    let base = match size {
        1 => return LOW8[idx],
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    };
    // The 16/32/64-bit registers are contiguous in iced's Register enum, in index order.
    Register::values()
        .nth(base as usize + idx)
        .expect("register index")
}

const LOW8: [Register; 16] = [
    Register::AL,
    Register::CL,
    Register::DL,
    Register::BL,
    Register::SPL,
    Register::BPL,
    Register::SIL,
    Register::DIL,
    Register::R8L,
    Register::R9L,
    Register::R10L,
    Register::R11L,
    Register::R12L,
    Register::R13L,
    Register::R14L,
    Register::R15L,
];

const HIGH8: [Register; 4] = [Register::AH, Register::CH, Register::DH, Register::BH];

/// Index (0..16) of the full register holding `r`.
pub fn index_of(r: Register) -> Option<usize> {
    let full = r.full_register();
    R64.iter().position(|x| *x == full)
}

/// The value of register `r` in `case` (resolved in the guest world; only for non-pointer values).
pub fn reg_value(case: &Case, r: Register) -> u64 {
    let Some(k) = index_of(r) else { return 0 };
    let v = case.regs[k].at(case.arch, guest_base(case.arch));
    if HIGH8.contains(&r) {
        (v >> 8) & 0xff
    } else {
        v & mask(r.size())
    }
}

/// Sets register `r` (of any width) in `case` to `v`, merging like a write of that width would.
pub fn set_reg(case: &mut Case, r: Register, v: u64) {
    let Some(k) = index_of(r) else { return };
    let old = match case.regs[k] {
        Val::Raw(x) => x,
        _ => 0,
    };
    let new = if HIGH8.contains(&r) {
        (old & !0xff00) | ((v & 0xff) << 8)
    } else {
        let m = mask(r.size());
        (old & !m) | (v & m)
    };
    case.regs[k] = Val::Raw(new & reg_mask(case.arch));
}

pub fn mask(size: usize) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}

/// Where a memory operand points.
#[derive(Clone, Copy, Debug)]
pub struct MemSel {
    /// Offset of the accessed bytes from the data region start.
    pub t: i64,
    pub size: usize,
}

/// Chosen operand.
#[derive(Clone, Copy, Debug)]
pub enum Sel {
    Reg(Register),
    Mem(MemSel),
    Imm(u64),
}

/// Operand filler for one instruction.
struct Filler<'r> {
    arch: Arch,
    rng: &'r mut Rng,
    case: Case,
    used: [bool; 16],
}

/// Whether `mn` accesses its memory operand (lea, nops and prefetches do not).
fn touches_memory(mn: Mnemonic) -> bool {
    !matches!(
        mn,
        Mnemonic::Lea
            | Mnemonic::Nop
            | Mnemonic::Prefetchnta
            | Mnemonic::Prefetcht0
            | Mnemonic::Prefetcht1
            | Mnemonic::Prefetcht2
            | Mnemonic::Prefetchw
    )
}

/// Registers an instruction uses implicitly (they must not double as a memory base).
fn implicit_regs(mn: Mnemonic) -> &'static [usize] {
    use Mnemonic as M;
    match mn {
        M::Mul | M::Imul | M::Div | M::Idiv | M::Cwd | M::Cdq | M::Cqo => &[0, 2],
        M::Cbw | M::Cwde | M::Cdqe | M::Sahf | M::Lahf | M::Cmpxchg => &[0],
        M::Cmpxchg8b | M::Cmpxchg16b => &[0, 1, 2, 3],
        M::Xlatb => &[0, 3],
        M::Enter | M::Leave => &[5],
        M::Pushad | M::Popad => &[0, 1, 2, 3, 5, 6, 7],
        M::Shl
        | M::Sal
        | M::Shr
        | M::Sar
        | M::Rol
        | M::Ror
        | M::Rcl
        | M::Rcr
        | M::Shld
        | M::Shrd => &[1],
        _ => &[],
    }
}

impl<'r> Filler<'r> {
    fn new(arch: Arch, rng: &'r mut Rng) -> Filler<'r> {
        let case = Case::random(arch, rng);
        let mut used = [false; 16];
        used[4] = true;
        Filler {
            arch,
            rng,
            case,
            used,
        }
    }

    /// A free register index (rsp excluded); `reuse` allows one already used.
    fn pick_index(&mut self, reuse: bool) -> usize {
        let n = gpr_count(self.arch);
        let free: Vec<usize> = (0..n)
            .filter(|k| *k != 4 && (reuse || !self.used[*k]))
            .collect();
        let k = if free.is_empty() {
            let all: Vec<usize> = (0..n).filter(|k| *k != 4).collect();
            self.rng.pick(&all)
        } else {
            self.rng.pick(&free)
        };
        self.used[k] = true;
        k
    }

    /// A random general purpose register of `size` bytes.
    fn pick_gpr(&mut self, size: usize) -> Register {
        let reuse = self.rng.chance(12);
        if size == 1 {
            let high = match self.arch {
                Arch::X86 => self.rng.chance(50),
                Arch::X64 => self.rng.chance(20),
            };
            if high {
                let free: Vec<usize> = (0..4).filter(|k| reuse || !self.used[*k]).collect();
                if let Some(k) = free.first().map(|_| self.rng.pick(&free)) {
                    self.used[k] = true;
                    return HIGH8[k];
                }
            }
            if self.arch == Arch::X86 {
                let free: Vec<usize> = (0..4).filter(|k| reuse || !self.used[*k]).collect();
                let k = if free.is_empty() {
                    self.rng.below(4) as usize
                } else {
                    self.rng.pick(&free)
                };
                self.used[k] = true;
                return LOW8[k];
            }
        }
        let k = self.pick_index(reuse);
        gpr(size, k)
    }

    fn pick_xmm(&mut self) -> Register {
        let n = gpr_count(self.arch) as u64;
        Register::values()
            .nth(Register::XMM0 as usize + self.rng.below(n) as usize)
            .expect("xmm")
    }

    /// Chooses where a memory operand of `size` bytes points: mostly inside the data region and
    /// naturally aligned, sometimes straddling or beyond its ends (page faults), sometimes misaligned.
    fn pick_target(&mut self, size: usize, touches: bool, seg: bool) -> i64 {
        let size = size.max(1) as i64;
        let align = size.min(16);
        let r = self.rng.below(100);
        if touches && r < 4 {
            // Straddles or lies beyond the end of the region.
            return DATA_LEN as i64 - size + 1 + self.rng.below(size as u64) as i64;
        }
        if touches && !seg && r < 6 {
            // Starts before the region.
            return -(1 + self.rng.below(size as u64) as i64);
        }
        let hi = DATA_LEN as i64 - 0x40 - size;
        let t = 0x40 + self.rng.below((hi - 0x40) as u64) as i64;
        if r < 12 {
            t
        } else {
            t & !(align - 1)
        }
    }

    /// Builds a memory operand reaching data offset `t` for the given variant.
    fn mem_operand(&mut self, t: i64, variant: Variant) -> MemoryOperand {
        let g = guest_base(self.arch);
        match variant {
            Variant::Seg => {
                let seg = match self.arch {
                    Arch::X86 => Register::FS,
                    Arch::X64 => Register::GS,
                };
                let size = if self.arch == Arch::X64 { 8 } else { 4 };
                MemoryOperand::new(Register::None, Register::None, 1, t, size, false, seg)
            }
            Variant::RipRel => MemoryOperand::new(
                Register::RIP,
                Register::None,
                1,
                (g + DATA_OFF).wrapping_add(t as u64) as i64,
                8,
                false,
                Register::None,
            ),
            Variant::Abs => {
                let size = if self.arch == Arch::X64 { 8 } else { 4 };
                MemoryOperand::new(
                    Register::None,
                    Register::None,
                    1,
                    (g + DATA_OFF).wrapping_add(t as u64) as i64,
                    size,
                    false,
                    Register::None,
                )
            }
            _ => {
                let asize = if self.arch == Arch::X64 { 8 } else { 4 };
                let b = self.pick_index(false);
                let (index, scale, iv) = if self.rng.chance(30) {
                    let k = self.pick_index(false);
                    let scale = self.rng.pick(&[1u32, 2, 4, 8]);
                    let iv = self.rng.below(16);
                    self.case.regs[k] = Val::Raw(iv);
                    (gpr(asize, k), scale, iv as i64)
                } else {
                    (Register::None, 1, 0)
                };
                let disp: i64 = match self.rng.below(4) {
                    0 => 0,
                    1 => self.rng.below(256) as i64 - 128,
                    _ => self.rng.below(0x1000) as i64 - 0x800,
                };
                self.case.regs[b] = Val::Data(t - disp - iv * scale as i64);
                MemoryOperand::new(
                    gpr(asize, b),
                    index,
                    scale,
                    disp,
                    if disp == 0 { 0 } else { 1 },
                    false,
                    Register::None,
                )
            }
        }
    }

    /// `lea`'s address: random registers and displacement (nothing is accessed).
    fn lea_operand(&mut self) -> MemoryOperand {
        let asize = match self.arch {
            Arch::X86 => 4,
            Arch::X64 if self.rng.chance(15) => 4,
            Arch::X64 => 8,
        };
        let n = gpr_count(self.arch) as u64;
        // Not rsp: its value differs between the worlds.
        let mut b = self.rng.below(n) as usize;
        if b == 4 {
            b = 5;
        }
        let base = if self.rng.chance(85) {
            gpr(asize, b)
        } else {
            Register::None
        };
        let index = if self.rng.chance(50) {
            let k = self.rng.below(n) as usize;
            if k == 4 {
                Register::None
            } else {
                gpr(asize, k)
            }
        } else {
            Register::None
        };
        let disp = match self.rng.below(3) {
            0 => 0,
            1 => self.rng.below(256) as i64 - 128,
            _ => self.rng.value() as i32 as i64,
        };
        let base = if base == Register::None && index == Register::None {
            gpr(asize, b)
        } else {
            base
        };
        MemoryOperand::new(
            base,
            index,
            self.rng.pick(&[1u32, 2, 4, 8]),
            disp,
            if disp == 0 { 0 } else { 1 },
            false,
            Register::None,
        )
    }
}

/// Sets operand `n` of `instr` to memory operand `m`.
pub fn set_mem(instr: &mut Instruction, n: u32, m: &MemoryOperand) {
    instr.set_op_kind(n, OpKind::Memory);
    instr.set_memory_base(m.base);
    instr.set_memory_index(m.index);
    instr.set_memory_index_scale(m.scale);
    instr.set_memory_displ_size(m.displ_size);
    instr.set_memory_displacement64(m.displacement as u64);
    instr.set_segment_prefix(m.segment_prefix);
}

/// Operand size in bytes of a register-or-memory operand kind.
fn rm_size(k: K) -> Option<usize> {
    Some(match k {
        K::r8_or_mem => 1,
        K::r16_or_mem => 2,
        K::r32_or_mem => 4,
        K::r64_or_mem => 8,
        K::xmm_or_mem => 16,
        _ => return None,
    })
}

/// Register size of a register operand kind.
fn reg_size(k: K) -> Option<usize> {
    Some(match k {
        K::r8_reg | K::r8_opcode => 1,
        K::r16_reg | K::r16_rm | K::r16_opcode | K::r16_reg_mem => 2,
        K::r32_reg | K::r32_rm | K::r32_opcode | K::r32_reg_mem => 4,
        K::r64_reg | K::r64_rm | K::r64_opcode | K::r64_reg_mem => 8,
        _ => return None,
    })
}

/// Whether the filler can produce every operand of `code`.
pub fn fillable(code: Code) -> bool {
    let oc = code.op_code();
    (0..oc.op_count()).all(|n| {
        let k = oc.op_kind(n);
        rm_size(k).is_some()
            || reg_size(k).is_some()
            || matches!(
                k,
                K::mem
                    | K::mem_offs
                    | K::xmm_reg
                    | K::xmm_rm
                    | K::al
                    | K::cl
                    | K::ax
                    | K::dx
                    | K::eax
                    | K::rax
                    | K::imm8
                    | K::imm8_const_1
                    | K::imm8sex16
                    | K::imm8sex32
                    | K::imm8sex64
                    | K::imm16
                    | K::imm32
                    | K::imm32sex64
                    | K::imm64
            )
    })
}

/// Whether `code` has a register-or-memory operand, a memory-only operand, a moffs operand.
pub fn operand_shape(code: Code) -> (bool, bool, bool) {
    let oc = code.op_code();
    let ks: Vec<K> = (0..oc.op_count()).map(|n| oc.op_kind(n)).collect();
    (
        ks.iter().any(|k| rm_size(*k).is_some()),
        ks.contains(&K::mem),
        ks.contains(&K::mem_offs),
    )
}

fn is_shift(mn: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        mn,
        M::Shl | M::Sal | M::Shr | M::Sar | M::Rol | M::Ror | M::Rcl | M::Rcr | M::Shld | M::Shrd
    )
}

/// One instruction of `code` with random operands, in a random state.
pub fn fill(arch: Arch, code: Code, variant: Variant, rng: &mut Rng) -> Result<Case, String> {
    let oc = code.op_code();
    let mn = oc.mnemonic();
    let mut f = Filler::new(arch, rng);
    for r in implicit_regs(mn) {
        f.used[*r] = true;
    }
    let mut instr = Instruction::default();
    instr.set_code(code);
    let count = oc.op_count();
    let mut sels: Vec<Option<Sel>> = vec![None; count as usize];
    let wants_mem = !matches!(variant, Variant::Plain | Variant::Reg);
    // Registers and immediates first, so the memory base avoids them.
    let mut imm_seen = false;
    for n in 0..count {
        let k = oc.op_kind(n);
        let sel = if let Some(s) = reg_size(k) {
            let r = f.pick_gpr(s);
            instr.set_op_kind(n, OpKind::Register);
            instr.set_op_register(n, r);
            Sel::Reg(r)
        } else if let Some(s) = rm_size(k).filter(|_| !wants_mem) {
            let r = if s == 16 { f.pick_xmm() } else { f.pick_gpr(s) };
            instr.set_op_kind(n, OpKind::Register);
            instr.set_op_register(n, r);
            Sel::Reg(r)
        } else if matches!(k, K::xmm_reg | K::xmm_rm) {
            let r = f.pick_xmm();
            instr.set_op_kind(n, OpKind::Register);
            instr.set_op_register(n, r);
            Sel::Reg(r)
        } else if let Some(r) = match k {
            K::al => Some(Register::AL),
            K::cl => Some(Register::CL),
            K::ax => Some(Register::AX),
            K::dx => Some(Register::DX),
            K::eax => Some(Register::EAX),
            K::rax => Some(Register::RAX),
            _ => None,
        } {
            instr.set_op_kind(n, OpKind::Register);
            instr.set_op_register(n, r);
            f.used[index_of(r).unwrap_or(0)] = true;
            Sel::Reg(r)
        } else if matches!(
            k,
            K::imm8
                | K::imm8_const_1
                | K::imm8sex16
                | K::imm8sex32
                | K::imm8sex64
                | K::imm16
                | K::imm32
                | K::imm32sex64
                | K::imm64
        ) {
            let v = if is_shift(mn) {
                f.rng.count()
            } else {
                f.rng.value()
            };
            let second = imm_seen;
            imm_seen = true;
            match k {
                K::imm8 if second => {
                    instr.set_op_kind(n, OpKind::Immediate8_2nd);
                    instr.set_immediate8_2nd(v as u8);
                }
                K::imm8 => {
                    instr.set_op_kind(n, OpKind::Immediate8);
                    instr.set_immediate8(v as u8);
                }
                K::imm8_const_1 => {
                    instr.set_op_kind(n, OpKind::Immediate8);
                    instr.set_immediate8(1);
                }
                K::imm8sex16 => {
                    instr.set_op_kind(n, OpKind::Immediate8to16);
                    instr.set_immediate8to16(v as i8 as i16);
                }
                K::imm8sex32 => {
                    instr.set_op_kind(n, OpKind::Immediate8to32);
                    instr.set_immediate8to32(v as i8 as i32);
                }
                K::imm8sex64 => {
                    instr.set_op_kind(n, OpKind::Immediate8to64);
                    instr.set_immediate8to64(v as i8 as i64);
                }
                K::imm16 => {
                    instr.set_op_kind(n, OpKind::Immediate16);
                    instr.set_immediate16(v as u16);
                }
                K::imm32 => {
                    instr.set_op_kind(n, OpKind::Immediate32);
                    instr.set_immediate32(v as u32);
                }
                K::imm32sex64 => {
                    instr.set_op_kind(n, OpKind::Immediate32to64);
                    instr.set_immediate32to64(v as i32 as i64);
                }
                _ => {
                    instr.set_op_kind(n, OpKind::Immediate64);
                    instr.set_immediate64(v);
                }
            }
            Sel::Imm(v)
        } else {
            continue;
        };
        sels[n as usize] = Some(sel);
    }
    for n in 0..count {
        if sels[n as usize].is_some() {
            continue;
        }
        let k = oc.op_kind(n);
        if !(rm_size(k).is_some() || matches!(k, K::mem | K::mem_offs)) {
            return Err(format!("operand kind {k:?} of {code:?} is not generated"));
        }
        if mn == Mnemonic::Lea {
            let m = f.lea_operand();
            set_mem(&mut instr, n, &m);
            continue;
        }
        let size = instr.memory_size().size().max(1);
        let t = f.pick_target(size, touches_memory(mn), variant == Variant::Seg);
        let mut bytes = [0u8; 16];
        for c in bytes.chunks_mut(8) {
            c.copy_from_slice(&f.rng.value().to_le_bytes());
        }
        f.case.poke_data(t, &bytes[..size.min(16)]);
        let v = if k == K::mem_offs {
            Variant::Abs
        } else {
            variant
        };
        let m = f.mem_operand(t, v);
        set_mem(&mut instr, n, &m);
        sels[n as usize] = Some(Sel::Mem(MemSel { t, size }));
    }
    if variant == Variant::Lock {
        instr.set_has_lock_prefix(true);
    }
    let mut case = f.case;
    let rng = f.rng;
    adjust(&mut case, &mut instr, &sels, rng);
    case.instrs = vec![instr];
    case.compute_undefined();
    refine_undefined(&mut case, &instr);
    check_encodable(arch, &case.instrs)?;
    Ok(case)
}

/// Fails if the instructions cannot be encoded (e.g. AH together with a REX-only register).
pub fn check_encodable(arch: Arch, instrs: &[Instruction]) -> Result<(), String> {
    let mut enc = Encoder::new(arch.bitness());
    for i in instrs {
        if i.flow_control() != FlowControl::Next {
            continue;
        }
        enc.encode(i, guest_base(arch) + 0x10_0000)
            .map_err(|e| format!("{e}"))?;
    }
    Ok(())
}

/// The value of a chosen operand in the initial state.
fn sel_value(case: &Case, sel: &Sel) -> u64 {
    match sel {
        Sel::Reg(r) => reg_value(case, *r),
        Sel::Mem(m) => case.peek_data(m.t, m.size.min(8)),
        Sel::Imm(v) => *v,
    }
}

/// Per-mnemonic adjustments that make the interesting cases likely.
pub fn adjust(case: &mut Case, instr: &mut Instruction, sels: &[Option<Sel>], rng: &mut Rng) {
    use Mnemonic as M;
    let mn = instr.mnemonic();
    let op = |n: usize| sels.get(n).copied().flatten();
    match mn {
        M::Shl
        | M::Sal
        | M::Shr
        | M::Sar
        | M::Rol
        | M::Ror
        | M::Rcl
        | M::Rcr
        | M::Shld
        | M::Shrd => {
            let last = instr.op_count() - 1;
            if instr.op_kind(last) == OpKind::Register && instr.op_register(last) == Register::CL {
                let c = rng.count();
                set_reg(case, Register::CL, c);
            }
            // A 16-bit double shift by more than 16 leaves its result undefined (Intel and AMD
            // differ): keep the count within the operand.
            if wide_double_shift(case, instr) {
                match instr.op_kind(last) {
                    OpKind::Register => {
                        set_reg(case, Register::CL, reg_value(case, Register::CL) & 0xf)
                    }
                    _ => instr.set_immediate8(instr.immediate8() & 0xf),
                }
            }
        }
        M::Div | M::Idiv => {
            let size = instr.memory_size().size().max(match op(0) {
                Some(Sel::Reg(r)) => r.size(),
                _ => 0,
            });
            let d = op(0).map_or(0, |s| sel_value(case, &s));
            let (lo, hi) = match size {
                1 => (Register::AL, Register::AH),
                2 => (Register::AX, Register::DX),
                4 => (Register::EAX, Register::EDX),
                _ => (Register::RAX, Register::RDX),
            };
            // Keep the divisor register intact when it is part of the dividend pair.
            let divisor_in_pair = matches!(op(0), Some(Sel::Reg(r)) if index_of(r) == Some(0) || index_of(r) == Some(2));
            let bits = size as u32 * 8;
            let pick = rng.below(100);
            if !divisor_in_pair && d != 0 && pick < 30 {
                // A quotient at the edge of the representable range (or just past it).
                let dividend: u128 = if mn == M::Div {
                    let qmax = mask(size) as u128;
                    let q = rng.pick(&[qmax, qmax + 1, qmax - 1, 0, 1]);
                    q * d as u128 + rng.next() as u128 % d as u128
                } else {
                    let ds = ((d << (64 - bits)) as i64 >> (64 - bits)) as i128;
                    let max = (1i128 << (bits - 1)) - 1;
                    let q = rng.pick(&[max, max + 1, max - 1, -max - 1, -max - 2, -1, 0]);
                    let n = q * ds;
                    let rem = (rng.next() as i128).rem_euclid(ds.abs());
                    (if n < 0 { n - rem } else { n + rem }) as u128
                };
                set_reg(case, lo, dividend as u64);
                set_reg(case, hi, (dividend >> bits) as u64);
            } else if !divisor_in_pair && d != 0 && pick < 80 {
                if mn == M::Div {
                    set_reg(case, hi, rng.next() % d);
                } else {
                    let l = reg_value(case, lo);
                    let neg = l & (1 << (size * 8 - 1)) != 0;
                    set_reg(case, hi, if neg { u64::MAX } else { 0 });
                }
            }
        }
        M::Bt | M::Bts | M::Btr | M::Btc => {
            if let (Some(Sel::Mem(_)), Some(Sel::Reg(r))) = (op(0), op(1)) {
                // A register bit offset reaches beyond the operand: keep it near.
                let v = (rng.below(512) as i64 - 256) as u64;
                set_reg(case, r, v);
            }
        }
        M::Bsf | M::Bsr | M::Lzcnt | M::Tzcnt | M::Popcnt if rng.chance(15) => match op(1) {
            Some(Sel::Reg(r)) => set_reg(case, r, 0),
            Some(Sel::Mem(m)) => case.poke_data(m.t, &[0; 8][..m.size.min(8)]),
            _ => {}
        },
        M::Cmpxchg if rng.chance(50) => {
            if let Some(s) = op(0) {
                let v = sel_value(case, &s);
                let size = match s {
                    Sel::Reg(r) => r.size(),
                    Sel::Mem(m) => m.size,
                    _ => 8,
                };
                let acc = match size {
                    1 => Register::AL,
                    2 => Register::AX,
                    4 => Register::EAX,
                    _ => Register::RAX,
                };
                set_reg(case, acc, v);
            }
        }
        M::Cmpxchg8b | M::Cmpxchg16b => {
            if let Some(Sel::Mem(m)) = op(0) {
                if rng.chance(50) {
                    let half = m.size / 2;
                    let lo = case.peek_data(m.t, half);
                    let hi = case.peek_data(m.t + half as i64, half);
                    let (a, d) = if half == 4 {
                        (Register::EAX, Register::EDX)
                    } else {
                        (Register::RAX, Register::RDX)
                    };
                    set_reg(case, a, lo);
                    set_reg(case, d, hi);
                }
            }
        }
        M::Enter => {
            let size = case.arch.ptr_size() as i64;
            case.regs[5] = Val::Stack(RSP_OFF + size * rng.below(64) as i64);
            instr.set_immediate16(rng.pick(&[0u16, 8, 0x10, 0x28, 0x100, 0xfff0]));
            instr.set_immediate8_2nd(rng.pick(&[0u8, 1, 2, 3, 4, 31, 32, 33, 0xff]));
        }
        M::Leave => {
            let size = case.arch.ptr_size() as i64;
            case.regs[5] = if rng.chance(90) {
                Val::Stack(RSP_OFF + size * rng.below(128) as i64)
            } else {
                Val::Stack(STACK_LEN as i64 - rng.below(4) as i64)
            };
        }
        M::Psrlw | M::Psrld | M::Psrlq | M::Psllw | M::Pslld | M::Psllq | M::Psraw | M::Psrad => {
            // Counts around the lane widths (a random 64-bit count just clears the lanes).
            let c = if rng.chance(80) {
                rng.count()
            } else {
                rng.next()
            };
            match op(1) {
                Some(Sel::Imm(_)) => instr.set_immediate8(c as u8),
                Some(Sel::Reg(r)) if r.is_xmm() => {
                    let k = r.number();
                    case.xmm[k] = (case.xmm[k] & !(u64::MAX as u128)) | c as u128;
                }
                Some(Sel::Mem(m)) => case.poke_data(m.t, &c.to_le_bytes()),
                _ => {}
            }
        }
        M::Psrldq | M::Pslldq if rng.chance(80) => {
            instr.set_immediate8(rng.below(18) as u8);
        }
        M::Popf | M::Popfd | M::Popfq => {
            // Only status flags and DF may change from user mode; keep IF set, TF/AC clear.
            let v = (rng.next() & (STATUS | DF)) | 0x202;
            let size = instr.stack_pointer_increment() as usize;
            let mut bytes = v.to_le_bytes().to_vec();
            bytes.truncate(size);
            let off = RSP_OFF as usize;
            case.stack[off..off + size].copy_from_slice(&bytes);
        }
        _ => {}
    }
}

/// The masked count of shift or rotate `instr` in the case's initial state.
fn masked_count(case: &Case, instr: &Instruction) -> u64 {
    let last = instr.op_count() - 1;
    let raw = match instr.op_kind(last) {
        OpKind::Register => reg_value(case, Register::CL),
        _ => instr.immediate(last),
    };
    raw & if operand_size(instr) == 8 { 0x3f } else { 0x1f }
}

/// Size in bytes of operand 0 (register or memory).
fn operand_size(instr: &Instruction) -> usize {
    match instr.op0_kind() {
        OpKind::Register => instr.op0_register().size(),
        _ => instr.memory_size().size(),
    }
}

/// Whether `instr` is a 16-bit shld/shrd whose count exceeds the operand, so that its result is
/// undefined.
pub fn wide_double_shift(case: &Case, instr: &Instruction) -> bool {
    matches!(instr.mnemonic(), Mnemonic::Shld | Mnemonic::Shrd)
        && operand_size(instr) == 2
        && masked_count(case, instr) > 16
}

/// Adjusts the undefined flags to this particular case's count: a masked count of 0 changes no
/// flag, a shift by 1 defines OF, and a rotate by any other count leaves OF undefined even where
/// the rotation is a whole turn (an 8-bit rcl by 9 changes OF on AMD, not on Intel).
pub fn refine_undefined(case: &mut Case, instr: &Instruction) {
    use Mnemonic as M;
    let mn = instr.mnemonic();
    if !is_shift(mn) {
        return;
    }
    let c = masked_count(case, instr);
    if c == 0 {
        case.undefined = 0;
    } else if c == 1 && !matches!(mn, M::Shld | M::Shrd) {
        case.undefined &= !OF;
    } else if c > 1 && matches!(mn, M::Rol | M::Ror | M::Rcl | M::Rcr) {
        case.undefined |= OF;
    }
}

/// Mnemonics of the catalogue, by group.
fn catalogue() -> Vec<(Group, Vec<Mnemonic>)> {
    use Mnemonic as M;
    vec![
        (
            Group::Integer,
            vec![
                M::Add,
                M::Adc,
                M::Sub,
                M::Sbb,
                M::And,
                M::Or,
                M::Xor,
                M::Cmp,
                M::Test,
                M::Inc,
                M::Dec,
                M::Neg,
                M::Not,
                M::Mul,
                M::Imul,
                M::Div,
                M::Idiv,
                M::Shl,
                M::Sal,
                M::Shr,
                M::Sar,
                M::Rol,
                M::Ror,
                M::Rcl,
                M::Rcr,
                M::Shld,
                M::Shrd,
                M::Bt,
                M::Bts,
                M::Btr,
                M::Btc,
                M::Bsf,
                M::Bsr,
                M::Lzcnt,
                M::Tzcnt,
                M::Popcnt,
            ],
        ),
        (
            Group::Data,
            vec![
                M::Mov,
                M::Movzx,
                M::Movsx,
                M::Movsxd,
                M::Lea,
                M::Xchg,
                M::Cmpxchg,
                M::Cmpxchg8b,
                M::Cmpxchg16b,
                M::Xadd,
                M::Bswap,
                M::Cbw,
                M::Cwde,
                M::Cdqe,
                M::Cwd,
                M::Cdq,
                M::Cqo,
                M::Seta,
                M::Setae,
                M::Setb,
                M::Setbe,
                M::Sete,
                M::Setg,
                M::Setge,
                M::Setl,
                M::Setle,
                M::Setne,
                M::Setno,
                M::Setnp,
                M::Setns,
                M::Seto,
                M::Setp,
                M::Sets,
                M::Cmova,
                M::Cmovae,
                M::Cmovb,
                M::Cmovbe,
                M::Cmove,
                M::Cmovg,
                M::Cmovge,
                M::Cmovl,
                M::Cmovle,
                M::Cmovne,
                M::Cmovno,
                M::Cmovnp,
                M::Cmovns,
                M::Cmovo,
                M::Cmovp,
                M::Cmovs,
                M::Sahf,
                M::Lahf,
                M::Clc,
                M::Stc,
                M::Cmc,
                M::Cld,
                M::Std,
                M::Nop,
                M::Movnti,
                M::Pause,
                M::Lfence,
                M::Mfence,
                M::Sfence,
                M::Endbr32,
                M::Endbr64,
                M::Prefetchnta,
                M::Prefetcht0,
                M::Prefetcht1,
                M::Prefetcht2,
                M::Prefetchw,
                M::Ud2,
            ],
        ),
        (
            Group::StringStack,
            vec![
                M::Push,
                M::Pop,
                M::Pushf,
                M::Pushfd,
                M::Pushfq,
                M::Popf,
                M::Popfd,
                M::Popfq,
                M::Enter,
                M::Leave,
                M::Pushad,
                M::Popad,
            ],
        ),
        (
            Group::Sse,
            vec![
                M::Movd,
                M::Movq,
                M::Movdqa,
                M::Movdqu,
                M::Movaps,
                M::Movups,
                M::Movapd,
                M::Movupd,
                M::Movntdq,
                M::Movntps,
                M::Movntpd,
                M::Movss,
                M::Movsd,
                M::Movhps,
                M::Movlps,
                M::Movhpd,
                M::Movlpd,
                M::Movhlps,
                M::Movlhps,
                M::Pxor,
                M::Xorps,
                M::Xorpd,
                M::Por,
                M::Orps,
                M::Orpd,
                M::Pand,
                M::Andps,
                M::Andpd,
                M::Pandn,
                M::Andnps,
                M::Andnpd,
                M::Paddb,
                M::Paddw,
                M::Paddd,
                M::Paddq,
                M::Psubb,
                M::Psubw,
                M::Psubd,
                M::Psubq,
                M::Pcmpeqb,
                M::Pcmpeqw,
                M::Pcmpeqd,
                M::Pcmpgtb,
                M::Pcmpgtw,
                M::Pcmpgtd,
                M::Pminub,
                M::Pmaxub,
                M::Pminsw,
                M::Pmaxsw,
                M::Pavgb,
                M::Pavgw,
                M::Paddusb,
                M::Paddusw,
                M::Psubusb,
                M::Psubusw,
                M::Paddsb,
                M::Paddsw,
                M::Psubsb,
                M::Psubsw,
                M::Pmullw,
                M::Pmulhw,
                M::Pmulhuw,
                M::Pmuludq,
                M::Pmaddwd,
                M::Psadbw,
                M::Packsswb,
                M::Packuswb,
                M::Packssdw,
                M::Pmovmskb,
                M::Movmskps,
                M::Movmskpd,
                M::Punpcklbw,
                M::Punpckhbw,
                M::Punpcklwd,
                M::Punpckhwd,
                M::Punpckldq,
                M::Punpckhdq,
                M::Punpcklqdq,
                M::Punpckhqdq,
                M::Unpcklps,
                M::Unpckhps,
                M::Unpcklpd,
                M::Unpckhpd,
                M::Pshufd,
                M::Pshuflw,
                M::Pshufhw,
                M::Shufps,
                M::Shufpd,
                M::Psrldq,
                M::Pslldq,
                M::Pinsrw,
                M::Pextrw,
                M::Psrlw,
                M::Psrld,
                M::Psrlq,
                M::Psllw,
                M::Pslld,
                M::Psllq,
                M::Psraw,
                M::Psrad,
            ],
        ),
    ]
}

/// Cases per spec by variant (before `DBT_CONFORMANCE_SOAK`).
fn count_of(group: Group, variant: Variant) -> usize {
    let base = match group {
        Group::Sse => 24,
        _ => 40,
    };
    match variant {
        Variant::Plain | Variant::Reg => base * 2,
        Variant::Mem => base,
        Variant::Lock | Variant::Seg | Variant::RipRel | Variant::Abs => base / 2,
    }
}

/// Whether `code` exists in `arch`'s mode.
pub fn in_mode(arch: Arch, code: Code) -> bool {
    let oc = code.op_code();
    oc.encoding() == EncodingKind::Legacy
        && oc.is_instruction()
        && oc.decoder_option() == iced_x86::DecoderOptions::NONE
        && match arch {
            Arch::X86 => oc.mode32(),
            Arch::X64 => oc.mode64(),
        }
}

/// The table's mnemonic and form of a code: (`add`, `r/m32, imm8`).
pub fn mnemonic_form(code: Code) -> (String, String) {
    let s = code.op_code().instruction_string();
    let s = s.trim_start_matches("LOCK ").trim_start_matches("REP ");
    let (m, f) = s.split_once(' ').unwrap_or((s, ""));
    (m.to_lowercase(), f.to_string())
}

/// Catalogue specs of `arch` (one per code and variant), and the forms the translator does not
/// support (not run).
pub fn catalogue_specs_only(arch: Arch) -> (Vec<Spec>, Vec<(String, String)>) {
    let mut specs = Vec::new();
    let mut unsupported = Vec::new();
    for (group, mnemonics) in catalogue() {
        for code in Code::values() {
            let oc = code.op_code();
            if !mnemonics.contains(&oc.mnemonic()) || !in_mode(arch, code) {
                continue;
            }
            if !fillable(code) {
                continue;
            }
            let (rm, mem_only, moffs) = operand_shape(code);
            let mut variants = Vec::new();
            if moffs {
                variants.push(Variant::Abs);
            } else if rm || mem_only {
                if rm {
                    variants.push(Variant::Reg);
                }
                variants.push(Variant::Mem);
                if oc.can_use_lock_prefix() {
                    variants.push(Variant::Lock);
                }
                if oc.mnemonic() != Mnemonic::Lea {
                    variants.push(Variant::Seg);
                    variants.push(match arch {
                        Arch::X86 => Variant::Abs,
                        Arch::X64 => Variant::RipRel,
                    });
                }
            } else {
                variants.push(Variant::Plain);
            }
            let (mnemonic, form) = mnemonic_form(code);
            for variant in variants {
                // A sample decides whether the translator supports the form at all.
                let mut rng = Rng::new(1);
                let supported = (0..64)
                    .find_map(|_| fill(arch, code, variant, &mut rng).ok())
                    .is_some_and(|c| c.instrs.iter().all(dbt::is_supported));
                let label = variant.label(arch).to_string();
                if !supported {
                    unsupported.push((
                        format!("{mnemonic} {form}"),
                        format!("{} {label}", arch.name()),
                    ));
                    continue;
                }
                specs.push(Spec {
                    arch,
                    group,
                    mnemonic: mnemonic.clone(),
                    form: form.clone(),
                    variant: label,
                    count: count_of(group, variant),
                    kind: Kind::Code { code, variant },
                    tag: String::new(),
                });
            }
        }
    }
    (specs, unsupported)
}
