//! SSE/SSE2 data moves and integer operations of the kind compilers emit for struct copies, zeroing
//! and simple vector code. Legacy (non-VEX) encodings on XMM registers only.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use crate::cpu::xmm_index;
use crate::fault::{Exception, ExecResult, FaultKind};
use crate::flags::size_mask;
use crate::machine::Machine;

const LOW64: u128 = u64::MAX as u128;

/// Reads an XMM register.
#[inline(always)]
fn xmm(m: &Machine, r: Register) -> u128 {
    xmm_index(r).map_or(0, |k| m.cpu.xmm[k])
}

/// Writes an XMM register.
#[inline(always)]
fn set_xmm(m: &mut Machine, r: Register, v: u128) {
    if let Some(k) = xmm_index(r) {
        m.cpu.xmm[k] = v;
    }
}

/// Faults with #GP unless `addr` is 16-byte aligned.
fn check_align(addr: u64, i: &Instruction) -> ExecResult {
    if !addr.is_multiple_of(16) {
        return Err(FaultKind::GeneralProtection(format!(
            "misaligned 16-byte SSE access at 0x{addr:x} ({:?})",
            i.mnemonic()
        ))
        .into());
    }
    Ok(())
}

/// Reads 128-bit operand `n` (an XMM register or m128, alignment-checked when `aligned`).
#[inline(always)]
fn src128(m: &mut Machine, i: &Instruction, n: u32, aligned: bool) -> Result<u128, Exception> {
    if i.op_kind(n) == OpKind::Register {
        return Ok(xmm(m, i.op_register(n)));
    }
    let addr = m.ea(i);
    if aligned {
        check_align(addr, i)?;
    }
    Ok(m.load_u128(addr)?)
}

/// Whether a 128-bit move requires alignment.
fn aligned_move(mn: Mnemonic) -> bool {
    matches!(
        mn,
        Mnemonic::Movdqa
            | Mnemonic::Movaps
            | Mnemonic::Movapd
            | Mnemonic::Movntdq
            | Mnemonic::Movntps
            | Mnemonic::Movntpd
    )
}

/// Full 128-bit moves: movdqa/movdqu/movaps/movups/movapd/movupd and the non-temporal stores.
pub(crate) fn mov128(m: &mut Machine, i: &Instruction) -> ExecResult {
    let aligned = aligned_move(i.mnemonic());
    if i.op0_kind() == OpKind::Register {
        let v = src128(m, i, 1, aligned)?;
        set_xmm(m, i.op0_register(), v);
        return Ok(());
    }
    let addr = m.ea(i);
    if aligned {
        check_align(addr, i)?;
    }
    let v = xmm(m, i.op1_register());
    Ok(m.store_u128(addr, v)?)
}

/// `movnti m32/m64, r`.
pub(crate) fn movnti(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = i.op1_register().size() as u32;
    let v = m.cpu.gpr(i.op1_register());
    m.write_op(i, 0, size, v)
}

/// movd / movq between XMM registers, GPRs and memory (loads into XMM zero the upper part).
pub(crate) fn movd_movq(m: &mut Machine, i: &Instruction) -> ExecResult {
    let size = if i.mnemonic() == Mnemonic::Movd { 4 } else { 8 };
    if let Some(dst) = (i.op0_kind() == OpKind::Register)
        .then(|| i.op0_register())
        .filter(|r| xmm_index(*r).is_some())
    {
        let v = match i.op1_kind() {
            OpKind::Register if xmm_index(i.op1_register()).is_some() => {
                xmm(m, i.op1_register()) as u64
            }
            _ => m.read_op(i, 1, size)?,
        };
        set_xmm(m, dst, (v & size_mask(size)) as u128);
        return Ok(());
    }
    let v = xmm(m, i.op1_register()) as u64 & size_mask(size);
    m.write_op(i, 0, size, v)
}

/// movss/movsd (data moves), movlps/movlpd, movhps/movhpd, movhlps, movlhps.
pub(crate) fn partial_move(m: &mut Machine, i: &Instruction) -> ExecResult {
    use Mnemonic as M;
    let mn = i.mnemonic();
    let to_reg = i.op0_kind() == OpKind::Register;
    if !to_reg {
        let v = xmm(m, i.op1_register());
        let (size, val) = match mn {
            M::Movss => (4, v as u64 & 0xffff_ffff),
            M::Movhps | M::Movhpd => (8, (v >> 64) as u64),
            _ => (8, v as u64),
        };
        let addr = m.ea(i);
        return Ok(m.store(addr, size, val)?);
    }
    let dst_reg = i.op0_register();
    let dst = xmm(m, dst_reg);
    let from_reg = i.op1_kind() == OpKind::Register;
    let res = match mn {
        M::Movss | M::Movsd => {
            let mask: u128 = if mn == M::Movss { 0xffff_ffff } else { LOW64 };
            if from_reg {
                (dst & !mask) | (xmm(m, i.op1_register()) & mask)
            } else {
                let addr = m.ea(i);
                m.load(addr, if mn == M::Movss { 4 } else { 8 })? as u128
            }
        }
        M::Movhlps => (dst & !LOW64) | (xmm(m, i.op1_register()) >> 64),
        M::Movlhps => (dst & LOW64) | (xmm(m, i.op1_register()) << 64),
        M::Movhps | M::Movhpd => {
            let addr = m.ea(i);
            (dst & LOW64) | (m.load(addr, 8)? as u128) << 64
        }
        _ => {
            let addr = m.ea(i);
            (dst & !LOW64) | m.load(addr, 8)? as u128
        }
    };
    set_xmm(m, dst_reg, res);
    Ok(())
}

/// Applies `f` lane-wise on lanes of `bits` bits.
#[inline(always)]
fn lanes(a: u128, b: u128, bits: u32, f: impl Fn(u64, u64) -> u64) -> u128 {
    let mask = size_mask(bits / 8) as u128;
    let mut out = 0u128;
    let mut k = 0;
    while k < 128 {
        let x = ((a >> k) & mask) as u64;
        let y = ((b >> k) & mask) as u64;
        out |= (f(x, y) as u128 & mask) << k;
        k += bits;
    }
    out
}

/// Lane width in bits from a mnemonic suffix.
fn lane_bits(mn: Mnemonic) -> u32 {
    use Mnemonic as M;
    match mn {
        M::Paddb | M::Psubb | M::Pcmpeqb | M::Pcmpgtb => 8,
        M::Paddw | M::Psubw | M::Pcmpeqw | M::Pcmpgtw => 16,
        M::Paddd | M::Psubd | M::Pcmpeqd | M::Pcmpgtd => 32,
        _ => 64,
    }
}

/// Bitwise logic: pand/pandn/por/pxor and the ps/pd forms.
pub(crate) fn logic(m: &mut Machine, i: &Instruction) -> ExecResult {
    use Mnemonic as M;
    let b = src128(m, i, 1, true)?;
    let r = i.op0_register();
    let a = xmm(m, r);
    let res = match i.mnemonic() {
        M::Pand | M::Andps | M::Andpd => a & b,
        M::Pandn | M::Andnps | M::Andnpd => !a & b,
        M::Por | M::Orps | M::Orpd => a | b,
        _ => a ^ b,
    };
    set_xmm(m, r, res);
    Ok(())
}

/// Lane-wise integer add, subtract and compare.
pub(crate) fn arith(m: &mut Machine, i: &Instruction) -> ExecResult {
    use Mnemonic as M;
    let b = src128(m, i, 1, true)?;
    let r = i.op0_register();
    let a = xmm(m, r);
    let mn = i.mnemonic();
    let bits = lane_bits(mn);
    let ones = size_mask(bits / 8);
    let sx = |v: u64| crate::flags::sext(v, bits / 8);
    let res = match mn {
        M::Paddb | M::Paddw | M::Paddd | M::Paddq => lanes(a, b, bits, |x, y| x.wrapping_add(y)),
        M::Psubb | M::Psubw | M::Psubd | M::Psubq => lanes(a, b, bits, |x, y| x.wrapping_sub(y)),
        M::Pcmpeqb | M::Pcmpeqw | M::Pcmpeqd => {
            lanes(a, b, bits, |x, y| if x == y { ones } else { 0 })
        }
        _ => lanes(a, b, bits, |x, y| if sx(x) > sx(y) { ones } else { 0 }),
    };
    set_xmm(m, r, res);
    Ok(())
}

/// pmovmskb / movmskps / movmskpd: sign bits of the lanes into a GPR.
pub(crate) fn movemask(m: &mut Machine, i: &Instruction) -> ExecResult {
    let bits = match i.mnemonic() {
        Mnemonic::Pmovmskb => 8,
        Mnemonic::Movmskps => 32,
        _ => 64,
    };
    let v = xmm(m, i.op1_register());
    let mut out = 0u64;
    for (n, k) in (0..128).step_by(bits).enumerate() {
        out |= (((v >> (k + bits - 1)) & 1) as u64) << n;
    }
    m.cpu.set_gpr(i.op0_register(), out);
    Ok(())
}

/// Interleaves: punpckl*/punpckh* and unpcklps/unpckhps/unpcklpd/unpckhpd.
pub(crate) fn unpack(m: &mut Machine, i: &Instruction) -> ExecResult {
    use Mnemonic as M;
    let mn = i.mnemonic();
    let (bits, high) = match mn {
        M::Punpcklbw => (8, false),
        M::Punpckhbw => (8, true),
        M::Punpcklwd => (16, false),
        M::Punpckhwd => (16, true),
        M::Punpckldq | M::Unpcklps => (32, false),
        M::Punpckhdq | M::Unpckhps => (32, true),
        M::Punpcklqdq | M::Unpcklpd => (64, false),
        _ => (64, true),
    };
    let b = src128(m, i, 1, true)?;
    let r = i.op0_register();
    let a = xmm(m, r);
    let mask = size_mask(bits / 8) as u128;
    let n = 128 / bits;
    let off = if high { n / 2 } else { 0 };
    let mut out = 0u128;
    for k in 0..n / 2 {
        let x = (a >> ((k + off) * bits)) & mask;
        let y = (b >> ((k + off) * bits)) & mask;
        out |= x << (2 * k * bits) | y << ((2 * k + 1) * bits);
    }
    set_xmm(m, r, out);
    Ok(())
}

/// Lane `k` of `bits` bits.
#[inline(always)]
fn lane(v: u128, bits: u32, k: u32) -> u128 {
    (v >> (k * bits)) & (size_mask(bits / 8) as u128)
}

/// pshufd / pshuflw / pshufhw / shufps / shufpd.
pub(crate) fn shuffle(m: &mut Machine, i: &Instruction) -> ExecResult {
    let src = src128(m, i, 1, true)?;
    let imm = i.immediate8() as u32;
    let sel = |k: u32| (imm >> (2 * k)) & 3;
    let r = i.op0_register();
    let res = match i.mnemonic() {
        Mnemonic::Pshufd => (0..4).fold(0u128, |acc, k| acc | lane(src, 32, sel(k)) << (32 * k)),
        Mnemonic::Pshuflw => {
            let low = (0..4).fold(0u128, |acc, k| acc | lane(src, 16, sel(k)) << (16 * k));
            (src & !LOW64) | low
        }
        Mnemonic::Pshufhw => {
            let high = (0..4).fold(0u128, |acc, k| {
                acc | lane(src, 16, 4 + sel(k)) << (16 * (k + 4))
            });
            (src & LOW64) | high
        }
        Mnemonic::Shufpd => {
            let dst = xmm(m, r);
            lane(dst, 64, imm & 1) | lane(src, 64, (imm >> 1) & 1) << 64
        }
        _ => {
            let dst = xmm(m, r);
            lane(dst, 32, sel(0))
                | lane(dst, 32, sel(1)) << 32
                | lane(src, 32, sel(2)) << 64
                | lane(src, 32, sel(3)) << 96
        }
    };
    set_xmm(m, r, res);
    Ok(())
}

/// psrldq / pslldq: whole-register byte shifts.
pub(crate) fn byte_shift(m: &mut Machine, i: &Instruction) -> ExecResult {
    let r = i.op0_register();
    let v = xmm(m, r);
    let n = i.immediate8() as u32;
    let res = if n > 15 {
        0
    } else if i.mnemonic() == Mnemonic::Psrldq {
        v >> (n * 8)
    } else {
        v << (n * 8)
    };
    set_xmm(m, r, res);
    Ok(())
}

/// psrlw/d/q, psllw/d/q, psraw/d with an immediate or XMM/m128 count.
pub(crate) fn lane_shift(m: &mut Machine, i: &Instruction) -> ExecResult {
    use Mnemonic as M;
    let mn = i.mnemonic();
    let bits = match mn {
        M::Psrlw | M::Psllw | M::Psraw => 16,
        M::Psrld | M::Pslld | M::Psrad => 32,
        _ => 64,
    };
    let count = match i.op1_kind() {
        OpKind::Immediate8 => i.immediate8() as u64,
        _ => src128(m, i, 1, true)? as u64,
    };
    let r = i.op0_register();
    let v = xmm(m, r);
    let res = match mn {
        M::Psraw | M::Psrad => {
            let c = count.min(bits as u64 - 1) as u32;
            lanes(v, 0, bits, |x, _| {
                (crate::flags::sext(x, bits / 8) >> c) as u64
            })
        }
        _ if count >= bits as u64 => 0,
        M::Psrlw | M::Psrld | M::Psrlq => lanes(v, 0, bits, |x, _| x >> count),
        _ => lanes(v, 0, bits, |x, _| x << count),
    };
    set_xmm(m, r, res);
    Ok(())
}

/// pinsrw xmm, r32/m16, imm8 and pextrw r32/m16, xmm, imm8.
pub(crate) fn word_insert_extract(m: &mut Machine, i: &Instruction) -> ExecResult {
    let k = (i.immediate8() & 7) as u32 * 16;
    if i.mnemonic() == Mnemonic::Pinsrw {
        let w = m.read_op(i, 1, 2)? & 0xffff;
        let r = i.op0_register();
        let v = (xmm(m, r) & !(0xffffu128 << k)) | (w as u128) << k;
        set_xmm(m, r, v);
    } else {
        let w = (xmm(m, i.op1_register()) >> k) as u64 & 0xffff;
        let size = m.op_size(i, 0);
        m.write_op(i, 0, size, w)?;
    }
    Ok(())
}

/// Saturates a signed value to `bits` bits.
fn sat_signed(v: i64, bits: u32) -> u64 {
    let max = (1i64 << (bits - 1)) - 1;
    let min = -(1i64 << (bits - 1));
    v.clamp(min, max) as u64
}

/// Saturates a signed value to an unsigned `bits`-bit range.
fn sat_unsigned(v: i64, bits: u32) -> u64 {
    v.clamp(0, (1i64 << bits) - 1) as u64
}

/// Integer min/max, averages, saturating arithmetic, multiplies, packs and psadbw.
pub(crate) fn arith_ext(m: &mut Machine, i: &Instruction) -> ExecResult {
    use Mnemonic as M;
    let b = src128(m, i, 1, true)?;
    let r = i.op0_register();
    let a = xmm(m, r);
    let s8 = |v: u64| crate::flags::sext(v, 1);
    let s16 = |v: u64| crate::flags::sext(v, 2);
    let s32 = |v: u64| crate::flags::sext(v, 4);
    let res = match i.mnemonic() {
        M::Pminub => lanes(a, b, 8, |x, y| x.min(y)),
        M::Pmaxub => lanes(a, b, 8, |x, y| x.max(y)),
        M::Pminsw => lanes(a, b, 16, |x, y| if s16(x) < s16(y) { x } else { y }),
        M::Pmaxsw => lanes(a, b, 16, |x, y| if s16(x) > s16(y) { x } else { y }),
        M::Pavgb => lanes(a, b, 8, |x, y| (x + y + 1) >> 1),
        M::Pavgw => lanes(a, b, 16, |x, y| (x + y + 1) >> 1),
        M::Paddusb => lanes(a, b, 8, |x, y| (x + y).min(0xff)),
        M::Paddusw => lanes(a, b, 16, |x, y| (x + y).min(0xffff)),
        M::Psubusb | M::Psubusw => lanes(
            a,
            b,
            if i.mnemonic() == M::Psubusb { 8 } else { 16 },
            |x, y| x.saturating_sub(y),
        ),
        M::Paddsb => lanes(a, b, 8, |x, y| sat_signed(s8(x) + s8(y), 8)),
        M::Paddsw => lanes(a, b, 16, |x, y| sat_signed(s16(x) + s16(y), 16)),
        M::Psubsb => lanes(a, b, 8, |x, y| sat_signed(s8(x) - s8(y), 8)),
        M::Psubsw => lanes(a, b, 16, |x, y| sat_signed(s16(x) - s16(y), 16)),
        M::Pmullw => lanes(a, b, 16, |x, y| x.wrapping_mul(y)),
        M::Pmulhw => lanes(a, b, 16, |x, y| ((s16(x) * s16(y)) >> 16) as u64),
        M::Pmulhuw => lanes(a, b, 16, |x, y| (x * y) >> 16),
        M::Pmuludq => lanes(a, b, 64, |x, y| (x & 0xffff_ffff) * (y & 0xffff_ffff)),
        M::Pmaddwd => lanes(a, b, 32, |x, y| {
            let lo = s16(x) * s16(y);
            let hi = s16(x >> 16) * s16(y >> 16);
            (lo + hi) as u64
        }),
        M::Psadbw => lanes(a, b, 64, |x, y| {
            (0..8)
                .map(|k| ((x >> (8 * k)) as u8).abs_diff((y >> (8 * k)) as u8) as u64)
                .sum()
        }),
        M::Packsswb | M::Packuswb => {
            let unsigned = i.mnemonic() == M::Packuswb;
            let pack = |v: u128| -> u128 {
                (0..8).fold(0u128, |acc, k| {
                    let w = s16(lane(v, 16, k) as u64);
                    let byte = if unsigned {
                        sat_unsigned(w, 8)
                    } else {
                        sat_signed(w, 8) & 0xff
                    };
                    acc | (byte as u128) << (8 * k)
                })
            };
            pack(a) | pack(b) << 64
        }
        _ => {
            let pack = |v: u128| -> u128 {
                (0..4).fold(0u128, |acc, k| {
                    acc | ((sat_signed(s32(lane(v, 32, k) as u64), 16) & 0xffff) as u128)
                        << (16 * k)
                })
            };
            pack(a) | pack(b) << 64
        }
    };
    set_xmm(m, r, res);
    Ok(())
}
