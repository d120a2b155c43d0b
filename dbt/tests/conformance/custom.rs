//! Hand-written generators: string instructions (rep prefixes, direction flag, overlap, faults
//! mid-way), xlat, control flow (jcc after flag producers, loop/jrcxz, call/ret, indirect
//! branches) and random flag chains.

use std::sync::OnceLock;

use dbt::Arch;
use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register, RepPrefixKind};

use crate::harness::{eflags_of, Case, Rng, Val, DATA_LEN, DF};
use crate::specs::{fill, in_mode, mnemonic_form, set_reg, Group, Kind, Spec, Variant};

/// Label id used as a branch target inside snippets.
const LABEL_A: u64 = 1;
const LABEL_B: u64 = 2;

/// Whether some instruction reads a flag that an earlier one left undefined.
pub fn reads_undefined(instrs: &[Instruction]) -> bool {
    let mut undef = 0u64;
    for i in instrs {
        if eflags_of(i.rflags_read()) & undef != 0 {
            return true;
        }
        let (defined, u) = crate::harness::flag_effect(i);
        undef = (undef & !defined) | u;
    }
    false
}

/// Whether some instruction is a 16-bit shld/shrd: in a chain or loop its count is unknown, and
/// above 16 its result is undefined (Intel and AMD differ).
fn has_16_bit_double_shift(instrs: &[Instruction]) -> bool {
    instrs.iter().any(|i| {
        matches!(i.mnemonic(), Mnemonic::Shld | Mnemonic::Shrd) && i.op0_register().size() == 2
    })
}

/// String instruction `mn` (e.g. Movsb) with `rep`, for the architecture's address size.
fn string_instr(arch: Arch, mn: Mnemonic, rep: RepPrefixKind) -> Result<Instruction, String> {
    use Mnemonic as M;
    let a = arch.bitness();
    let none = Register::None;
    let r = match mn {
        M::Movsb => Instruction::with_movsb(a, none, rep),
        M::Movsw => Instruction::with_movsw(a, none, rep),
        M::Movsd => Instruction::with_movsd(a, none, rep),
        M::Movsq => Instruction::with_movsq(a, none, rep),
        M::Stosb => Instruction::with_stosb(a, rep),
        M::Stosw => Instruction::with_stosw(a, rep),
        M::Stosd => Instruction::with_stosd(a, rep),
        M::Stosq => Instruction::with_stosq(a, rep),
        M::Lodsb => Instruction::with_lodsb(a, none, rep),
        M::Lodsw => Instruction::with_lodsw(a, none, rep),
        M::Lodsd => Instruction::with_lodsd(a, none, rep),
        M::Lodsq => Instruction::with_lodsq(a, none, rep),
        M::Cmpsb => Instruction::with_cmpsb(a, none, rep),
        M::Cmpsw => Instruction::with_cmpsw(a, none, rep),
        M::Cmpsd => Instruction::with_cmpsd(a, none, rep),
        M::Cmpsq => Instruction::with_cmpsq(a, none, rep),
        M::Scasb => Instruction::with_scasb(a, rep),
        M::Scasw => Instruction::with_scasw(a, rep),
        M::Scasd => Instruction::with_scasd(a, rep),
        _ => Instruction::with_scasq(a, rep),
    };
    r.map_err(|e| e.to_string())
}

/// A string instruction case: pointers into the data region placed for the count and direction
/// (sometimes overlapping, sometimes running off the region), equal runs for repe/repne.
fn string_case(
    arch: Arch,
    rng: &mut Rng,
    mn: Mnemonic,
    rep: RepPrefixKind,
) -> Result<Case, String> {
    use Mnemonic as M;
    let mut case = Case::random(arch, rng);
    let instr = string_instr(arch, mn, rep)?;
    let e = instr.memory_size().size() as i64;
    let repeated = rep != RepPrefixKind::None;
    let count: i64 = if repeated {
        rng.pick(&[
            0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 255, 0x200,
        ])
    } else {
        1
    };
    let count = count.min((DATA_LEN as i64 - 16) / e);
    let back = rng.chance(30);
    if back {
        case.flags |= DF;
    }
    let len = count.max(1) * e;
    // First element offset so that all elements stay in the region.
    // At most one operand runs off the region: which of two faulting reads the CPU reports
    // first is not architectural.
    let mut risky_left = true;
    let mut place = |rng: &mut Rng| -> i64 {
        if risky_left && rng.chance(8) {
            risky_left = false;
            // Anywhere near the ends: may run into a guard page part-way.
            return rng.pick(&[0i64, 8, 64, DATA_LEN as i64 - 64, DATA_LEN as i64 - 8])
                + rng.below(8) as i64
                - 4;
        }
        let room = DATA_LEN as i64 - len;
        let off = rng.below(room.max(1) as u64 + 1) as i64;
        let off = if rng.chance(80) { off & !(e - 1) } else { off };
        if back {
            off + len - e
        } else {
            off
        }
    };
    let s = place(rng);
    let mut d = place(rng);
    let movs = matches!(mn, M::Movsb | M::Movsw | M::Movsd | M::Movsq);
    if movs && rng.chance(25) {
        // Overlapping copy in either direction.
        d = (s + rng.below(33) as i64 - 16).clamp(0, DATA_LEN as i64 - e);
        if !back {
            d = d.min(DATA_LEN as i64 - len);
        } else {
            d = d.max(len - e);
        }
    }
    let step = if back { -e } else { e };
    let acc = case.regs[0];
    let acc = match acc {
        Val::Raw(v) => v,
        _ => 0,
    };
    // Runs of equal elements make repe/repne stop in the middle.
    let equal_run = rng.below(count.max(1) as u64 + 1) as i64;
    match mn {
        M::Cmpsb | M::Cmpsw | M::Cmpsd | M::Cmpsq => {
            for k in 0..equal_run {
                let (ps, pd) = (s + k * step, d + k * step);
                if (0..=DATA_LEN as i64 - e).contains(&ps)
                    && (0..=DATA_LEN as i64 - e).contains(&pd)
                {
                    let v = case.peek_data(ps, e as usize);
                    case.poke_data(pd, &v.to_le_bytes()[..e as usize]);
                }
            }
        }
        M::Scasb | M::Scasw | M::Scasd | M::Scasq => {
            for k in 0..equal_run {
                case.poke_data(d + k * step, &acc.to_le_bytes()[..e as usize]);
            }
            if rep == RepPrefixKind::Repne && rng.chance(60) {
                // repne: no match until element `equal_run`.
                for k in 0..equal_run {
                    case.poke_data(d + k * step, &(!acc).to_le_bytes()[..e as usize]);
                }
                case.poke_data(d + equal_run * step, &acc.to_le_bytes()[..e as usize]);
            }
        }
        _ => {}
    }
    case.regs[6] = Val::Data(s);
    case.regs[7] = Val::Data(d);
    if repeated {
        case.regs[1] = Val::Raw(count as u64);
    }
    case.instrs = vec![instr];
    case.compute_undefined();
    if repeated
        && matches!(
            mn,
            M::Cmpsb | M::Cmpsw | M::Cmpsd | M::Cmpsq | M::Scasb | M::Scasw | M::Scasd | M::Scasq
        )
    {
        case.fault_undefined = crate::harness::STATUS;
    }
    Ok(case)
}

macro_rules! string_gen {
    ($name:ident, $mn:ident, $rep:ident) => {
        fn $name(arch: Arch, rng: &mut Rng) -> Result<Case, String> {
            string_case(arch, rng, Mnemonic::$mn, RepPrefixKind::$rep)
        }
    };
}

string_gen!(movsb, Movsb, None);
string_gen!(movsw, Movsw, None);
string_gen!(movsd, Movsd, None);
string_gen!(movsq, Movsq, None);
string_gen!(rep_movsb, Movsb, Repe);
string_gen!(rep_movsw, Movsw, Repe);
string_gen!(rep_movsd, Movsd, Repe);
string_gen!(rep_movsq, Movsq, Repe);
string_gen!(stosb, Stosb, None);
string_gen!(stosw, Stosw, None);
string_gen!(stosd, Stosd, None);
string_gen!(stosq, Stosq, None);
string_gen!(rep_stosb, Stosb, Repe);
string_gen!(rep_stosw, Stosw, Repe);
string_gen!(rep_stosd, Stosd, Repe);
string_gen!(rep_stosq, Stosq, Repe);
string_gen!(lodsb, Lodsb, None);
string_gen!(lodsw, Lodsw, None);
string_gen!(lodsd, Lodsd, None);
string_gen!(lodsq, Lodsq, None);
string_gen!(rep_lodsb, Lodsb, Repe);
string_gen!(rep_lodsd, Lodsd, Repe);
string_gen!(cmpsb, Cmpsb, None);
string_gen!(cmpsw, Cmpsw, None);
string_gen!(cmpsd, Cmpsd, None);
string_gen!(cmpsq, Cmpsq, None);
string_gen!(repe_cmpsb, Cmpsb, Repe);
string_gen!(repe_cmpsw, Cmpsw, Repe);
string_gen!(repe_cmpsd, Cmpsd, Repe);
string_gen!(repe_cmpsq, Cmpsq, Repe);
string_gen!(repne_cmpsb, Cmpsb, Repne);
string_gen!(repne_cmpsd, Cmpsd, Repne);
string_gen!(scasb, Scasb, None);
string_gen!(scasw, Scasw, None);
string_gen!(scasd, Scasd, None);
string_gen!(scasq, Scasq, None);
string_gen!(repe_scasb, Scasb, Repe);
string_gen!(repe_scasd, Scasd, Repe);
string_gen!(repne_scasb, Scasb, Repne);
string_gen!(repne_scasw, Scasw, Repne);
string_gen!(repne_scasd, Scasd, Repne);
string_gen!(repne_scasq, Scasq, Repne);

/// `xlatb`: al = [rbx + al].
fn xlat(arch: Arch, rng: &mut Rng) -> Result<Case, String> {
    let mut case = Case::random(arch, rng);
    let al = rng.next() & 0xff;
    set_reg(&mut case, Register::AL, al);
    let t = rng.below(DATA_LEN as u64) as i64 + if rng.chance(5) { 0x100 } else { 0 };
    case.regs[3] = Val::Data(t - al as i64);
    // iced has no constructor for xlatb: decode it.
    let i =
        iced_x86::Decoder::new(arch.bitness(), &[0xd7], iced_x86::DecoderOptions::NONE).decode();
    case.instrs = vec![i];
    Ok(case)
}

/// Flag producers placed before a conditional branch (register forms).
fn producer_codes(arch: Arch) -> &'static [Code] {
    static X86: OnceLock<Vec<Code>> = OnceLock::new();
    static X64: OnceLock<Vec<Code>> = OnceLock::new();
    let list = |arch: Arch| -> Vec<Code> {
        use Code as C;
        [
            C::Cmp_rm32_r32,
            C::Cmp_rm8_r8,
            C::Cmp_rm16_r16,
            C::Cmp_rm64_r64,
            C::Cmp_rm32_imm8,
            C::Cmp_rm64_imm32,
            C::Test_rm32_r32,
            C::Test_rm8_r8,
            C::Test_rm64_r64,
            C::Sub_rm32_r32,
            C::Sub_rm64_imm8,
            C::Add_rm32_r32,
            C::Add_rm64_r64,
            C::Adc_rm32_r32,
            C::Sbb_rm32_r32,
            C::And_rm32_imm32,
            C::Or_rm8_r8,
            C::Xor_rm32_r32,
            C::Dec_rm32,
            C::Inc_rm32,
            C::Dec_rm64,
            C::Neg_rm32,
            C::Shl_rm32_CL,
            C::Shr_rm32_1,
            C::Sar_rm64_imm8,
            C::Bt_rm32_r32,
            C::Bt_rm32_imm8,
            C::Bsf_r32_rm32,
            C::Imul_r32_rm32,
            C::Popcnt_r32_rm32,
            C::Xadd_rm32_r32,
            C::Cmpxchg_rm32_r32,
        ]
        .into_iter()
        .filter(|c| in_mode(arch, *c))
        .collect()
    };
    match arch {
        Arch::X86 => X86.get_or_init(|| list(Arch::X86)),
        Arch::X64 => X64.get_or_init(|| list(Arch::X64)),
    }
}

/// A random case whose snippet starts with a random flag producer (or nothing).
fn with_producer(arch: Arch, rng: &mut Rng) -> Result<Case, String> {
    if rng.chance(20) {
        let mut c = Case::random(arch, rng);
        c.instrs.clear();
        return Ok(c);
    }
    let code = rng.pick(producer_codes(arch));
    let variant = if rng.chance(80) {
        Variant::Reg
    } else {
        Variant::Mem
    };
    fill(arch, code, variant, rng)
}

/// `[producer] jcc L; xor eax, marker; L: nop` (also loop/jrcxz/jmp forms).
fn branch_case(arch: Arch, rng: &mut Rng, code: Code) -> Result<Case, String> {
    let mut case = with_producer(arch, rng)?;
    let mn = code.op_code().mnemonic();
    if matches!(
        mn,
        Mnemonic::Loop | Mnemonic::Loope | Mnemonic::Loopne | Mnemonic::Jecxz | Mnemonic::Jrcxz
    ) {
        // Unless the producer uses rcx (e.g. as a memory base).
        let uses_rcx = case.instrs.iter().any(|i| {
            [i.memory_base(), i.memory_index()]
                .into_iter()
                .chain(
                    (0..i.op_count())
                        .filter(|n| i.op_kind(*n) == OpKind::Register)
                        .map(|n| i.op_register(n)),
                )
                .any(|r| crate::harness::full_index(r) == Some(1))
        });
        if !uses_rcx {
            let c = rng.pick(&[0u64, 1, 2, 3, 0x1_0000_0000, 0xffff_ffff, u64::MAX]);
            case.regs[1] = Val::Raw(c & crate::harness::reg_mask(arch));
        }
    }
    let j = Instruction::with_branch(code, LABEL_A).map_err(|e| e.to_string())?;
    let x = Instruction::with2(Code::Xor_rm32_imm32, Register::EAX, 0x5a5a_5a5au32)
        .map_err(|e| e.to_string())?;
    let mut l = Instruction::with(Code::Nopd);
    l.set_ip(LABEL_A);
    case.instrs.extend([j, x, l]);
    if reads_undefined(&case.instrs) {
        return Err("branch reads an undefined flag".into());
    }
    case.compute_undefined();
    Ok(case)
}

/// `call L1; jmp L2; L1: ret [imm]; L2: nop`.
fn call_ret_case(arch: Arch, rng: &mut Rng, ret: Code) -> Result<Case, String> {
    let mut case = Case::random(arch, rng);
    let call = match arch {
        Arch::X86 => Code::Call_rel32_32,
        Arch::X64 => Code::Call_rel32_64,
    };
    let jmp = match arch {
        Arch::X86 => Code::Jmp_rel8_32,
        Arch::X64 => Code::Jmp_rel8_64,
    };
    let c = Instruction::with_branch(call, LABEL_A).map_err(|e| e.to_string())?;
    let j = Instruction::with_branch(jmp, LABEL_B).map_err(|e| e.to_string())?;
    let mut r = if ret.op_code().op_count() == 1 {
        Instruction::with1(ret, rng.pick(&[0u32, 4, 8, 0x10, 0x28])).map_err(|e| e.to_string())?
    } else {
        Instruction::with(ret)
    };
    r.set_ip(LABEL_A);
    let mut l = Instruction::with(Code::Nopd);
    l.set_ip(LABEL_B);
    case.instrs = vec![c, j, r, l];
    case.compute_undefined();
    Ok(case)
}

/// `call L; L: pop rax; lea rax, [rax + K]; jmp/call rax; target: pop rcx` (indirect branch through a
/// register to a position-independent target).
fn indirect_case(arch: Arch, rng: &mut Rng, via_call: bool) -> Result<Case, String> {
    let mut case = Case::random(arch, rng);
    let (call, pop, add, br, pop2) = match arch {
        Arch::X86 => (
            Code::Call_rel32_32,
            Instruction::with1(Code::Pop_r32, Register::EAX),
            Instruction::with2(
                Code::Lea_r32_m,
                Register::EAX,
                iced_x86::MemoryOperand::with_base_displ(Register::EAX, 6),
            ),
            Instruction::with1(
                if via_call {
                    Code::Call_rm32
                } else {
                    Code::Jmp_rm32
                },
                Register::EAX,
            ),
            Instruction::with1(Code::Pop_r32, Register::ECX),
        ),
        Arch::X64 => (
            Code::Call_rel32_64,
            Instruction::with1(Code::Pop_r64, Register::RAX),
            Instruction::with2(
                Code::Lea_r64_m,
                Register::RAX,
                iced_x86::MemoryOperand::with_base_displ(Register::RAX, 7),
            ),
            Instruction::with1(
                if via_call {
                    Code::Call_rm64
                } else {
                    Code::Jmp_rm64
                },
                Register::RAX,
            ),
            Instruction::with1(Code::Pop_r64, Register::RCX),
        ),
    };
    let c = Instruction::with_branch(call, LABEL_A).map_err(|e| e.to_string())?;
    let mut p = pop.map_err(|e| e.to_string())?;
    p.set_ip(LABEL_A);
    let mut list = vec![
        c,
        p,
        add.map_err(|e| e.to_string())?,
        br.map_err(|e| e.to_string())?,
    ];
    if via_call {
        list.push(pop2.map_err(|e| e.to_string())?);
    }
    case.instrs = list;
    case.compute_undefined();
    Ok(case)
}

/// Register-only forms of the integer and data catalogue (for flag chains).
fn chain_pool(arch: Arch) -> &'static [(Code, Variant)] {
    static X86: OnceLock<Vec<(Code, Variant)>> = OnceLock::new();
    static X64: OnceLock<Vec<(Code, Variant)>> = OnceLock::new();
    let make = |arch: Arch| -> Vec<(Code, Variant)> {
        let (specs, _) = crate::specs::catalogue_specs_only(arch);
        specs
            .into_iter()
            .filter(|s| matches!(s.group, Group::Integer | Group::Data))
            .filter_map(|s| match s.kind {
                Kind::Code { code, variant }
                    if matches!(variant, Variant::Reg | Variant::Plain) =>
                {
                    Some((code, variant))
                }
                _ => None,
            })
            .filter(|(c, _)| {
                !matches!(
                    c.op_code().mnemonic(),
                    Mnemonic::Std | Mnemonic::Cld | Mnemonic::Nop
                )
            })
            .collect()
    };
    match arch {
        Arch::X86 => X86.get_or_init(|| make(Arch::X86)),
        Arch::X64 => X64.get_or_init(|| make(Arch::X64)),
    }
}

/// 2..6 random register instructions in a row: lazy flags handed from one to the next (adc after
/// add, setcc after inc, cmov after shifts ...). Chains that read an undefined flag are redrawn.
fn chain(arch: Arch, rng: &mut Rng) -> Result<Case, String> {
    let pool = chain_pool(arch);
    let n = 2 + rng.below(5) as usize;
    let mut case = Case::random(arch, rng);
    let mut fork = rng.clone();
    for _ in 0..n {
        let (code, variant) = rng.pick(pool);
        let c = fill(arch, code, variant, &mut fork)?;
        case.instrs.extend(c.instrs);
    }
    if reads_undefined(&case.instrs) {
        return Err("chain reads an undefined flag".into());
    }
    if has_16_bit_double_shift(&case.instrs) {
        return Err("chain has a 16-bit double shift".into());
    }
    crate::specs::check_encodable(arch, &case.instrs)?;
    case.compute_undefined();
    Ok(case)
}

/// Full-register indices an instruction uses (explicitly or implicitly).
fn regs_used(i: &Instruction) -> Vec<usize> {
    let mut f = iced_x86::InstructionInfoFactory::new();
    f.info(i)
        .used_registers()
        .iter()
        .filter_map(|u| crate::harness::full_index(u.register()))
        .collect()
}

/// `dec`/`sub` of the counter and a backward `jnz`, or `loop`.
fn loop_tail(arch: Arch, rng: &mut Rng, ctr: usize) -> Result<Vec<Instruction>, String> {
    let e = |r: Result<Instruction, iced_x86::IcedError>| r.map_err(|e| e.to_string());
    let (jnz, lp) = match arch {
        Arch::X86 => (Code::Jne_rel8_32, Code::Loop_rel8_32_ECX),
        Arch::X64 => (Code::Jne_rel8_64, Code::Loop_rel8_64_RCX),
    };
    let r32 = crate::specs::gpr(4, ctr);
    let rn = crate::specs::gpr(arch.ptr_size() as usize, ctr);
    Ok(match rng.below(4) {
        0 if ctr == 1 => vec![e(Instruction::with_branch(lp, LABEL_A))?],
        0 | 1 => vec![
            e(Instruction::with1(Code::Dec_rm32, r32))?,
            e(Instruction::with_branch(jnz, LABEL_A))?,
        ],
        2 => vec![
            e(Instruction::with2(
                if arch == Arch::X64 {
                    Code::Sub_rm64_imm8
                } else {
                    Code::Sub_rm32_imm8
                },
                rn,
                1i32,
            ))?,
            e(Instruction::with_branch(jnz, LABEL_A))?,
        ],
        _ => vec![
            e(Instruction::with2(Code::Add_rm32_imm8, r32, -1i32))?,
            e(Instruction::with_branch(jnz, LABEL_A))?,
        ],
    })
}

/// A counted loop over 1-4 random register instructions (1-64 iterations): flags carried around a
/// back edge, blocks that branch to themselves.
fn loop_case(arch: Arch, rng: &mut Rng) -> Result<Case, String> {
    let pool = chain_pool(arch);
    let mut case = Case::random(arch, rng);
    let ctr = rng.pick(&[1usize, 2, 3, 5, 6, 7]);
    let mut fork = rng.clone();
    let mut body = Vec::new();
    let n = 1 + rng.below(4) as usize;
    while body.len() < n {
        let (code, variant) = rng.pick(pool);
        let c = fill(arch, code, variant, &mut fork)?;
        if c.instrs.iter().all(|i| !regs_used(i).contains(&ctr)) {
            body.extend(c.instrs);
        }
    }
    body[0].set_ip(LABEL_A);
    let tail = loop_tail(arch, rng, ctr)?;
    let once: Vec<Instruction> = body.iter().chain(tail.iter()).copied().collect();
    let twice: Vec<Instruction> = once.iter().chain(once.iter()).copied().collect();
    if reads_undefined(&twice) || has_16_bit_double_shift(&body) {
        return Err("loop reads an undefined flag or has a 16-bit double shift".into());
    }
    crate::specs::check_encodable(arch, &body)?;
    case.regs[ctr] = Val::Raw(1 + rng.below(64));
    case.instrs = once;
    case.compute_undefined();
    Ok(case)
}

/// A loop walking a pointer through the data region with a memory instruction (load, store or
/// read-modify-write), 1-64 iterations, sometimes off the region's end: faults after some
/// iterations must leave the same registers and memory.
fn walk_case(arch: Arch, rng: &mut Rng) -> Result<Case, String> {
    use Code as C;
    let codes = [
        C::Mov_r32_rm32,
        C::Mov_rm32_r32,
        C::Add_rm32_r32,
        C::Add_r32_rm32,
        C::Xor_rm8_imm8,
        C::Cmp_rm32_imm8,
        C::Inc_rm16,
        C::Movzx_r32_rm8,
        C::Movsx_r32_rm16,
        C::Sub_rm64_r64,
        C::Mov_r64_rm64,
        C::Xadd_rm32_r32,
        C::Bts_rm32_imm8,
        C::Neg_rm32,
        C::Movdqu_xmm_xmmm128,
        C::Movdqu_xmmm128_xmm,
        C::Paddd_xmm_xmmm128,
    ];
    let code = rng.pick(&codes);
    if !in_mode(arch, code) {
        return Err("not in this mode".into());
    }
    let variant = if code.op_code().can_use_lock_prefix() && rng.chance(20) {
        Variant::Lock
    } else {
        Variant::Mem
    };
    let mut case = fill(arch, code, variant, rng)?;
    let mem = case.instrs[0];
    let base = mem.memory_base();
    let Some(b) = crate::harness::full_index(base) else {
        return Err("no base register".into());
    };
    let used = regs_used(&mem);
    let Some(ctr) = [1usize, 2, 3, 5, 6, 7]
        .into_iter()
        .find(|k| !used.contains(k))
    else {
        return Err("no free counter".into());
    };
    let size = mem.memory_size().size().max(1) as i64;
    let step = rng.pick(&[size, -size, 1, 4, 16, -8]);
    let iters = 1 + rng.below(64) as i64;
    // Start so that the walk stays inside the region, or (30%) crosses an end part-way.
    let start = if rng.chance(30) {
        if step > 0 {
            crate::harness::DATA_LEN as i64 - size - step * (rng.below(iters as u64) as i64)
        } else {
            -step * rng.below(iters as u64) as i64
        }
    } else if step > 0 {
        rng.below(0x100) as i64
    } else {
        crate::harness::DATA_LEN as i64 - size - rng.below(0x100) as i64
    };
    let disp = mem.memory_displacement64() as i64;
    let disp = if arch == Arch::X86 {
        disp as i32 as i64
    } else {
        disp
    };
    let index = match mem.memory_index() {
        Register::None => 0,
        r => match crate::harness::full_index(r).map(|k| case.regs[k]) {
            Some(Val::Raw(v)) => v as i64 * mem.memory_index_scale() as i64,
            _ => 0,
        },
    };
    case.regs[b] = Val::Data(start - disp - index);
    let mut first = mem;
    first.set_ip(LABEL_A);
    let add = Instruction::with2(
        if arch == Arch::X64 {
            Code::Add_rm64_imm8
        } else {
            Code::Add_rm32_imm8
        },
        crate::specs::gpr(arch.ptr_size() as usize, b),
        step as i32,
    )
    .map_err(|e| e.to_string())?;
    let tail = loop_tail(arch, rng, ctr)?;
    case.instrs = [first, add].into_iter().chain(tail).collect();
    case.regs[ctr] = Val::Raw(iters as u64);
    let twice: Vec<Instruction> = case
        .instrs
        .iter()
        .chain(case.instrs.iter())
        .copied()
        .collect();
    if reads_undefined(&twice) {
        return Err("walk reads an undefined flag".into());
    }
    case.compute_undefined();
    Ok(case)
}

fn push_custom(
    out: &mut Vec<Spec>,
    arch: Arch,
    group: Group,
    code: Code,
    variant: &str,
    count: usize,
    f: crate::specs::Custom,
) {
    let (mnemonic, form) = mnemonic_form(code);
    out.push(Spec {
        arch,
        group,
        mnemonic,
        form,
        variant: variant.to_string(),
        count,
        kind: Kind::Custom(f),
        tag: String::new(),
    });
}

/// Branch generators per code (function pointers cannot capture the code).
macro_rules! branch_gens {
    ($($name:ident => $code:ident),* $(,)?) => {
        $(fn $name(arch: Arch, rng: &mut Rng) -> Result<Case, String> {
            branch_case(arch, rng, Code::$code)
        })*
        const BRANCHES: &[(Code, crate::specs::Custom)] = &[$((Code::$code, $name)),*];
    };
}

branch_gens! {
    ja32 => Ja_rel8_32, jae32 => Jae_rel8_32, jb32 => Jb_rel8_32, jbe32 => Jbe_rel8_32,
    je32 => Je_rel8_32, jne32 => Jne_rel8_32, jg32 => Jg_rel8_32, jge32 => Jge_rel8_32,
    jl32 => Jl_rel8_32, jle32 => Jle_rel8_32, jo32 => Jo_rel8_32, jno32 => Jno_rel8_32,
    jp32 => Jp_rel8_32, jnp32 => Jnp_rel8_32, js32 => Js_rel8_32, jns32 => Jns_rel8_32,
    je32n => Je_rel32_32, jne32n => Jne_rel32_32, jl32n => Jl_rel32_32, jbe32n => Jbe_rel32_32,
    ja64 => Ja_rel8_64, jae64 => Jae_rel8_64, jb64 => Jb_rel8_64, jbe64 => Jbe_rel8_64,
    je64 => Je_rel8_64, jne64 => Jne_rel8_64, jg64 => Jg_rel8_64, jge64 => Jge_rel8_64,
    jl64 => Jl_rel8_64, jle64 => Jle_rel8_64, jo64 => Jo_rel8_64, jno64 => Jno_rel8_64,
    jp64 => Jp_rel8_64, jnp64 => Jnp_rel8_64, js64 => Js_rel8_64, jns64 => Jns_rel8_64,
    je64n => Je_rel32_64, jne64n => Jne_rel32_64, jl64n => Jl_rel32_64, jbe64n => Jbe_rel32_64,
    jmp8_32 => Jmp_rel8_32, jmp32_32 => Jmp_rel32_32, jmp8_64 => Jmp_rel8_64, jmp32_64 => Jmp_rel32_64,
    loop32 => Loop_rel8_32_ECX, loope32 => Loope_rel8_32_ECX, loopne32 => Loopne_rel8_32_ECX,
    jecxz32 => Jecxz_rel8_32,
    loop64 => Loop_rel8_64_RCX, loope64 => Loope_rel8_64_RCX, loopne64 => Loopne_rel8_64_RCX,
    jrcxz64 => Jrcxz_rel8_64, loop64e => Loop_rel8_64_ECX, jecxz64 => Jecxz_rel8_64,
}

fn call_ret(arch: Arch, rng: &mut Rng) -> Result<Case, String> {
    let c = match arch {
        Arch::X86 => Code::Retnd,
        Arch::X64 => Code::Retnq,
    };
    call_ret_case(arch, rng, c)
}

fn call_ret_imm(arch: Arch, rng: &mut Rng) -> Result<Case, String> {
    let c = match arch {
        Arch::X86 => Code::Retnd_imm16,
        Arch::X64 => Code::Retnq_imm16,
    };
    call_ret_case(arch, rng, c)
}

fn jmp_reg(arch: Arch, rng: &mut Rng) -> Result<Case, String> {
    indirect_case(arch, rng, false)
}

fn call_reg(arch: Arch, rng: &mut Rng) -> Result<Case, String> {
    indirect_case(arch, rng, true)
}

/// Hand-written specs of `arch`.
pub fn specs(arch: Arch) -> Vec<Spec> {
    let mut out = Vec::new();
    let strings: &[(Mnemonic, RepPrefixKind, crate::specs::Custom)] = {
        use Mnemonic as M;
        use RepPrefixKind as R;
        &[
            (M::Movsb, R::None, movsb),
            (M::Movsw, R::None, movsw),
            (M::Movsd, R::None, movsd),
            (M::Movsq, R::None, movsq),
            (M::Movsb, R::Repe, rep_movsb),
            (M::Movsw, R::Repe, rep_movsw),
            (M::Movsd, R::Repe, rep_movsd),
            (M::Movsq, R::Repe, rep_movsq),
            (M::Stosb, R::None, stosb),
            (M::Stosw, R::None, stosw),
            (M::Stosd, R::None, stosd),
            (M::Stosq, R::None, stosq),
            (M::Stosb, R::Repe, rep_stosb),
            (M::Stosw, R::Repe, rep_stosw),
            (M::Stosd, R::Repe, rep_stosd),
            (M::Stosq, R::Repe, rep_stosq),
            (M::Lodsb, R::None, lodsb),
            (M::Lodsw, R::None, lodsw),
            (M::Lodsd, R::None, lodsd),
            (M::Lodsq, R::None, lodsq),
            (M::Lodsb, R::Repe, rep_lodsb),
            (M::Lodsd, R::Repe, rep_lodsd),
            (M::Cmpsb, R::None, cmpsb),
            (M::Cmpsw, R::None, cmpsw),
            (M::Cmpsd, R::None, cmpsd),
            (M::Cmpsq, R::None, cmpsq),
            (M::Cmpsb, R::Repe, repe_cmpsb),
            (M::Cmpsw, R::Repe, repe_cmpsw),
            (M::Cmpsd, R::Repe, repe_cmpsd),
            (M::Cmpsq, R::Repe, repe_cmpsq),
            (M::Cmpsb, R::Repne, repne_cmpsb),
            (M::Cmpsd, R::Repne, repne_cmpsd),
            (M::Scasb, R::None, scasb),
            (M::Scasw, R::None, scasw),
            (M::Scasd, R::None, scasd),
            (M::Scasq, R::None, scasq),
            (M::Scasb, R::Repe, repe_scasb),
            (M::Scasd, R::Repe, repe_scasd),
            (M::Scasb, R::Repne, repne_scasb),
            (M::Scasw, R::Repne, repne_scasw),
            (M::Scasd, R::Repne, repne_scasd),
            (M::Scasq, R::Repne, repne_scasq),
        ]
    };
    for (mn, rep, f) in strings {
        let i = match string_instr(arch, *mn, *rep) {
            Ok(i) => i,
            Err(_) => continue,
        };
        if !in_mode(arch, i.code()) {
            continue;
        }
        let label = match (rep, mn) {
            (RepPrefixKind::None, _) => "",
            (RepPrefixKind::Repne, _) => "repne",
            (_, Mnemonic::Cmpsb | Mnemonic::Cmpsw | Mnemonic::Cmpsd | Mnemonic::Cmpsq) => "repe",
            (_, Mnemonic::Scasb | Mnemonic::Scasw | Mnemonic::Scasd | Mnemonic::Scasq) => "repe",
            _ => "rep",
        };
        let count = if *rep == RepPrefixKind::None { 32 } else { 80 };
        push_custom(
            &mut out,
            arch,
            Group::StringStack,
            i.code(),
            label,
            count,
            *f,
        );
    }
    push_custom(
        &mut out,
        arch,
        Group::StringStack,
        Code::Xlat_m8,
        "",
        48,
        xlat,
    );
    for (code, f) in BRANCHES {
        if in_mode(arch, *code) {
            push_custom(&mut out, arch, Group::Control, *code, "", 48, *f);
        }
    }
    let (ret, ret_imm, jr, cr) = match arch {
        Arch::X86 => (
            Code::Retnd,
            Code::Retnd_imm16,
            Code::Jmp_rm32,
            Code::Call_rm32,
        ),
        Arch::X64 => (
            Code::Retnq,
            Code::Retnq_imm16,
            Code::Jmp_rm64,
            Code::Call_rm64,
        ),
    };
    push_custom(
        &mut out,
        arch,
        Group::Control,
        ret,
        "call rel32 + ret",
        32,
        call_ret,
    );
    push_custom(
        &mut out,
        arch,
        Group::Control,
        ret_imm,
        "call rel32 + ret",
        32,
        call_ret_imm,
    );
    push_custom(&mut out, arch, Group::Control, jr, "reg", 32, jmp_reg);
    push_custom(&mut out, arch, Group::Control, cr, "reg", 32, call_reg);
    out.push(Spec {
        arch,
        group: Group::Control,
        mnemonic: "(chain)".into(),
        form: "2-6 random register instructions".into(),
        variant: "flags".into(),
        count: 4000,
        kind: Kind::Custom(chain),
        tag: String::new(),
    });
    out.push(Spec {
        arch,
        group: Group::Control,
        mnemonic: "(loop)".into(),
        form: "counted loop over 1-4 random register instructions".into(),
        variant: "dec/sub/add + jnz, loop".into(),
        count: 1000,
        kind: Kind::Custom(loop_case),
        tag: String::new(),
    });
    out.push(Spec {
        arch,
        group: Group::Control,
        mnemonic: "(walk)".into(),
        form: "loop walking a pointer with a memory instruction".into(),
        variant: "load, store, rmw, lock".into(),
        count: 1000,
        kind: Kind::Custom(walk_case),
        tag: String::new(),
    });
    out
}
