//! Lazy EFLAGS.
//!
//! Flag-producing instructions record the kind of operation, its operands, result and size; the six
//! status flags (CF, PF, AF, ZF, SF, OF) are computed only when something reads them (jcc, setcc,
//! cmovcc, adc, sbb, pushf, ...). Bits that no lazy operation covers (IF, DF, ...) live in `base`.

/// Carry flag.
pub(crate) const CF: u64 = 1 << 0;
/// Parity flag.
pub(crate) const PF: u64 = 1 << 2;
/// Auxiliary carry flag.
pub(crate) const AF: u64 = 1 << 4;
/// Zero flag.
pub(crate) const ZF: u64 = 1 << 6;
/// Sign flag.
pub(crate) const SF: u64 = 1 << 7;
/// Interrupt enable flag.
pub(crate) const IF: u64 = 1 << 9;
/// Direction flag.
pub(crate) const DF: u64 = 1 << 10;
/// Overflow flag.
pub(crate) const OF: u64 = 1 << 11;
/// The six arithmetic status flags.
pub(crate) const STATUS: u64 = CF | PF | AF | ZF | SF | OF;
/// Bit 1 of EFLAGS reads as one.
const RESERVED_ONE: u64 = 1 << 1;
/// Bits software can change with popf/set_flags: status, TF, IF, DF, OF, NT, AC, ID.
const WRITABLE: u64 = STATUS | (1 << 8) | IF | DF | (1 << 14) | (1 << 18) | (1 << 21);

/// Mask of an operand of `size` bytes.
#[inline(always)]
pub(crate) fn size_mask(size: u32) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}

/// Sign bit of an operand of `size` bytes (sizes outside 1..=8 are clamped).
#[inline(always)]
pub(crate) fn sign_bit(size: u32) -> u64 {
    1u64 << (size.clamp(1, 8) * 8 - 1)
}

/// Sign-extends the low `size` bytes of `v` to 64 bits (sizes outside 1..=8 are clamped).
#[inline(always)]
pub(crate) fn sext(v: u64, size: u32) -> i64 {
    let shift = 64 - size.clamp(1, 8) * 8;
    ((v << shift) as i64) >> shift
}

/// Even parity of the low byte.
#[inline(always)]
fn parity(v: u64) -> bool {
    (v as u8).count_ones().is_multiple_of(2)
}

/// PF, ZF and SF of a result of `size` bytes.
#[inline(always)]
pub(crate) fn pzs(res: u64, size: u32) -> u64 {
    let res = res & size_mask(size);
    let mut f = 0;
    if parity(res) {
        f |= PF;
    }
    if res == 0 {
        f |= ZF;
    }
    if res & sign_bit(size) != 0 {
        f |= SF;
    }
    f
}

/// Condition codes as `u8` (the discriminants of iced's `ConditionCode`), for pre-decoded ops.
pub(crate) mod cc {
    /// Overflow.
    pub(crate) const O: u8 = 1;
    /// No overflow.
    pub(crate) const NO: u8 = 2;
    /// Below (CF).
    pub(crate) const B: u8 = 3;
    /// Above or equal (!CF).
    pub(crate) const AE: u8 = 4;
    /// Equal (ZF).
    pub(crate) const E: u8 = 5;
    /// Not equal (!ZF).
    pub(crate) const NE: u8 = 6;
    /// Below or equal (CF | ZF).
    pub(crate) const BE: u8 = 7;
    /// Above (!CF & !ZF).
    pub(crate) const A: u8 = 8;
    /// Sign.
    pub(crate) const S: u8 = 9;
    /// No sign.
    pub(crate) const NS: u8 = 10;
    /// Parity even.
    pub(crate) const P: u8 = 11;
    /// Parity odd.
    pub(crate) const NP: u8 = 12;
    /// Less (SF != OF).
    pub(crate) const L: u8 = 13;
    /// Greater or equal (SF == OF).
    pub(crate) const GE: u8 = 14;
    /// Less or equal (ZF | SF != OF).
    pub(crate) const LE: u8 = 15;
    /// Greater (!ZF & SF == OF).
    pub(crate) const G: u8 = 16;
}

/// Flag writers whose kind a later flag reader in the same block can rely on (the `K` parameter of
/// the `*_known` handlers): their fast and generic handlers always record this kind.
pub(crate) mod writer {
    /// add: [`FlagOp::Add`](super::FlagOp::Add).
    pub(crate) const ADD: u8 = 1;
    /// sub, cmp, neg: [`FlagOp::Sub`](super::FlagOp::Sub).
    pub(crate) const SUB: u8 = 2;
    /// and, or, xor, test: [`FlagOp::Logic`](super::FlagOp::Logic).
    pub(crate) const LOGIC: u8 = 3;
}

/// Whether condition `code` (see [`cc`]) depends on CF.
pub(crate) fn cond_reads_carry(code: u8) -> bool {
    matches!(code, cc::B | cc::AE | cc::BE | cc::A)
}

/// Truth table of each condition code (see [`cc`]): bit `i` is the condition's value when
/// `i == CF | ZF << 1 | SF << 2 | OF << 3`. Code 0 (no condition) is always true; P and NP read PF
/// and are evaluated apart. Padded to 32 entries so any 5-bit index is in bounds.
const COND_TABLE: [u16; 32] = cond_table();

const fn cond_table() -> [u16; 32] {
    let mut table = [0u16; 32];
    let mut code = 0;
    while code < 17 {
        let mut i = 0;
        while i < 16 {
            let (cf, zf, sf, of) = (i & 1 != 0, i & 2 != 0, i & 4 != 0, i & 8 != 0);
            let v = match code as u8 {
                cc::O => of,
                cc::NO => !of,
                cc::B => cf,
                cc::AE => !cf,
                cc::E => zf,
                cc::NE => !zf,
                cc::BE => cf || zf,
                cc::A => !cf && !zf,
                cc::S => sf,
                cc::NS => !sf,
                cc::P | cc::NP => false,
                cc::L => sf != of,
                cc::GE => sf == of,
                cc::LE => zf || sf != of,
                cc::G => !zf && sf == of,
                _ => true,
            };
            if v {
                table[code] |= 1 << i;
            }
            i += 1;
        }
        code += 1;
    }
    table
}

/// Condition `code` (see [`cc`]) for the given CF and OF and a result `res` with sign bit `sign`
/// (giving ZF, SF and PF); branch-free except for P/NP.
#[inline(always)]
fn test_cond(code: u8, cf: bool, of: bool, res: u64, sign: u64) -> bool {
    if code == cc::P || code == cc::NP {
        return parity(res) == (code == cc::P);
    }
    let i =
        cf as u32 | ((res == 0) as u32) << 1 | ((res & sign != 0) as u32) << 2 | (of as u32) << 3;
    COND_TABLE[(code & 31) as usize] >> i & 1 != 0
}

/// Evaluates condition `code` (see [`cc`]) on the flags that operation `op` (Add, Sub, Logic, Inc or
/// Dec) of `size` bytes produces from `a`, `b` and `res` (all masked to `size`). For Inc and Dec the
/// condition must not read CF. With `op` and `size` known at compile time this folds to a few
/// compares and a table lookup (see [`cond_fixed`] for conditions known at compile time).
#[inline(always)]
pub(crate) fn eval_cond(op: FlagOp, size: u32, a: u64, b: u64, res: u64, code: u8) -> bool {
    let sign = sign_bit(size);
    let (cf, of) = match op {
        FlagOp::Add => (res < a, (a ^ res) & (b ^ res) & sign != 0),
        FlagOp::Sub => (a < b, (a ^ b) & (a ^ res) & sign != 0),
        FlagOp::Inc => (false, res == sign),
        FlagOp::Dec => (false, res == sign - 1),
        _ => (false, false),
    };
    test_cond(code, cf, of, res, sign)
}

/// [`eval_cond`] for a condition `code` known at compile time, where it folds to a compare (for
/// Sub, a comparison of the operands).
#[inline(always)]
pub(crate) fn cond_fixed(op: FlagOp, size: u32, a: u64, b: u64, res: u64, code: u8) -> bool {
    if op == FlagOp::Sub {
        let (sa, sb) = (sext(a, size), sext(b, size));
        match code {
            cc::B => return a < b,
            cc::AE => return a >= b,
            cc::E => return a == b,
            cc::NE => return a != b,
            cc::BE => return a <= b,
            cc::A => return a > b,
            cc::L => return sa < sb,
            cc::GE => return sa >= sb,
            cc::LE => return sa <= sb,
            cc::G => return sa > sb,
            _ => {}
        }
    }
    let sign = sign_bit(size);
    let (cf, of) = match op {
        FlagOp::Add => (res < a, (a ^ res) & (b ^ res) & sign != 0),
        FlagOp::Sub => (a < b, (a ^ b) & (a ^ res) & sign != 0),
        FlagOp::Inc => (false, res == sign),
        FlagOp::Dec => (false, res == sign - 1),
        _ => (false, false),
    };
    let (zf, sf) = (res == 0, res & sign != 0);
    match code {
        cc::O => of,
        cc::NO => !of,
        cc::B => cf,
        cc::AE => !cf,
        cc::E => zf,
        cc::NE => !zf,
        cc::BE => cf || zf,
        cc::A => !cf && !zf,
        cc::S => sf,
        cc::NS => !sf,
        cc::P => parity(res),
        cc::NP => !parity(res),
        cc::L => sf != of,
        cc::GE => sf == of,
        cc::LE => zf || sf != of,
        cc::G => !zf && sf == of,
        _ => true,
    }
}

/// The operation whose flags are pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlagOp {
    /// Nothing pending: `base` holds every flag.
    None,
    /// `a + b` (also adc with carry-in 0).
    Add,
    /// `a + b + 1` (adc with carry-in 1).
    Adc1,
    /// `a - b` (also cmp, neg, sbb with borrow-in 0).
    Sub,
    /// `a - b - 1` (sbb with borrow-in 1).
    Sbb1,
    /// and/or/xor/test: CF = OF = AF = 0.
    Logic,
    /// inc: CF kept in `base`.
    Inc,
    /// dec: CF kept in `base`.
    Dec,
    /// shl by `b` (non-zero).
    Shl,
    /// shr by `b` (non-zero).
    Shr,
    /// sar by `b` (non-zero).
    Sar,
}

/// EFLAGS with lazily evaluated status flags.
#[derive(Clone, Debug)]
pub(crate) struct Flags {
    base: u64,
    op: FlagOp,
    size: u32,
    a: u64,
    b: u64,
    res: u64,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            base: RESERVED_ONE | IF,
            op: FlagOp::None,
            size: 4,
            a: 0,
            b: 0,
            res: 0,
        }
    }
}

impl Flags {
    /// Records a flag-producing operation (operands and result are masked to `size`).
    #[inline(always)]
    pub(crate) fn set(&mut self, op: FlagOp, size: u32, a: u64, b: u64, res: u64) {
        let m = size_mask(size);
        self.op = op;
        self.size = size;
        self.a = a & m;
        self.b = b & m;
        self.res = res & m;
    }

    /// Records an operation whose operands and result are already masked to `size`.
    #[inline(always)]
    pub(crate) fn record(&mut self, op: FlagOp, size: u32, a: u64, b: u64, res: u64) {
        self.op = op;
        self.size = size;
        self.a = a;
        self.b = b;
        self.res = res;
    }

    /// Records inc/dec when CF is not read before the next write of it (no need to preserve it).
    #[inline(always)]
    pub(crate) fn set_incdec_carry_dead(&mut self, op: FlagOp, size: u32, res: u64) {
        self.op = op;
        self.size = size;
        self.res = res & size_mask(size);
    }

    /// Records a logic operation result.
    #[inline(always)]
    pub(crate) fn set_logic(&mut self, size: u32, res: u64) {
        self.op = FlagOp::Logic;
        self.size = size;
        self.res = res & size_mask(size);
    }

    /// Records inc/dec (which preserve CF).
    #[inline(always)]
    pub(crate) fn set_incdec(&mut self, op: FlagOp, size: u32, res: u64) {
        if self.op != FlagOp::Inc && self.op != FlagOp::Dec {
            let cf = if self.carry() { CF } else { 0 };
            self.base = (self.base & !CF) | cf;
        }
        self.op = op;
        self.size = size;
        self.res = res & size_mask(size);
    }

    /// Current carry flag.
    #[inline(always)]
    pub(crate) fn carry(&self) -> bool {
        let (a, b) = (self.a, self.b);
        match self.op {
            FlagOp::None | FlagOp::Inc | FlagOp::Dec => self.base & CF != 0,
            FlagOp::Add => self.res < a,
            FlagOp::Adc1 => self.res <= a,
            FlagOp::Sub => a < b,
            FlagOp::Sbb1 => a <= b,
            FlagOp::Logic => false,
            FlagOp::Shl => {
                let bits = self.size * 8;
                ((a as u128) << b >> bits) & 1 != 0
            }
            FlagOp::Shr => (a >> (b - 1)) & 1 != 0,
            FlagOp::Sar => (sext(a, self.size) >> (b - 1).min(63)) & 1 != 0,
        }
    }

    /// The six status flags.
    fn status(&self) -> u64 {
        if self.op == FlagOp::None {
            return self.base & STATUS;
        }
        let size = self.size;
        let sign = sign_bit(size);
        let (a, b, res) = (self.a, self.b, self.res);
        let mut f = pzs(res, size);
        if self.carry() {
            f |= CF;
        }
        match self.op {
            FlagOp::None | FlagOp::Logic | FlagOp::Sar => {}
            FlagOp::Add | FlagOp::Adc1 => {
                f |= (a ^ b ^ res) & AF;
                if (a ^ res) & (b ^ res) & sign != 0 {
                    f |= OF;
                }
            }
            FlagOp::Sub | FlagOp::Sbb1 => {
                f |= (a ^ b ^ res) & AF;
                if (a ^ b) & (a ^ res) & sign != 0 {
                    f |= OF;
                }
            }
            FlagOp::Inc => {
                if res & 0xf == 0 {
                    f |= AF;
                }
                if res == sign {
                    f |= OF;
                }
            }
            FlagOp::Dec => {
                if res & 0xf == 0xf {
                    f |= AF;
                }
                if res == sign - 1 {
                    f |= OF;
                }
            }
            FlagOp::Shl => {
                // Intel computes OF from the first one-bit step for every count.
                if (a ^ (a << 1)) & sign != 0 {
                    f |= OF;
                }
            }
            FlagOp::Shr => {
                if a & sign != 0 {
                    f |= OF;
                }
            }
        }
        f
    }

    /// Materialized EFLAGS.
    #[inline]
    pub(crate) fn get(&self) -> u64 {
        if self.op == FlagOp::None {
            return self.base;
        }
        (self.base & !STATUS) | self.status()
    }

    /// Replaces EFLAGS (only software-writable bits are kept; bit 1 reads as one).
    pub(crate) fn set_all(&mut self, v: u64) {
        self.base = (v & WRITABLE) | RESERVED_ONE;
        self.op = FlagOp::None;
    }

    /// Folds the pending operation into `base`.
    #[inline]
    pub(crate) fn materialize(&mut self) {
        if self.op != FlagOp::None {
            self.base = self.get();
            self.op = FlagOp::None;
        }
    }

    /// Sets the flags in `mask` to `bits`, keeping every other flag.
    #[inline]
    pub(crate) fn update(&mut self, mask: u64, bits: u64) {
        self.materialize();
        self.base = (self.base & !mask) | (bits & mask);
    }

    /// Tests one flag bit.
    #[inline]
    pub(crate) fn test(&self, bit: u64) -> bool {
        if bit == CF {
            return self.carry();
        }
        if bit & STATUS == 0 {
            return self.base & bit != 0;
        }
        self.get() & bit != 0
    }

    /// Evaluates condition `CC` (see [`cc`]) when the pending operation is known to be of kind `K`
    /// (see [`writer`]).
    #[inline(always)]
    pub(crate) fn cond_known<const K: u8, const CC: u8>(&self) -> bool {
        let op = match K {
            writer::ADD => FlagOp::Add,
            writer::SUB => FlagOp::Sub,
            _ => FlagOp::Logic,
        };
        cond_fixed(op, self.size, self.a, self.b, self.res, CC)
    }

    /// Evaluates a jcc/setcc/cmovcc condition (see [`cc`]).
    #[inline]
    pub(crate) fn cond(&self, code: u8) -> bool {
        let (a, b, res) = (self.a, self.b, self.res);
        let sign = sign_bit(self.size);
        let carry = self.base & CF != 0;
        let (cf, of) = match self.op {
            FlagOp::Sub => (a < b, (a ^ b) & (a ^ res) & sign != 0),
            FlagOp::Logic => (false, false),
            FlagOp::Add => (res < a, (a ^ res) & (b ^ res) & sign != 0),
            FlagOp::Inc => (carry, res == sign),
            FlagOp::Dec => (carry, res == sign - 1),
            _ => return self.cond_materialized(code),
        };
        test_cond(code, cf, of, res, sign)
    }

    /// [`cond`](Self::cond) from the materialized flags.
    #[cold]
    fn cond_materialized(&self, code: u8) -> bool {
        let f = self.get();
        let has = |bit: u64| f & bit != 0;
        if code == cc::P || code == cc::NP {
            return has(PF) == (code == cc::P);
        }
        let i =
            has(CF) as u32 | (has(ZF) as u32) << 1 | (has(SF) as u32) << 2 | (has(OF) as u32) << 3;
        COND_TABLE[(code & 31) as usize] >> i & 1 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_sub_flags() {
        let mut f = Flags::default();
        f.set(FlagOp::Add, 1, 0x7f, 1, 0x80);
        assert_eq!(f.get() & STATUS, OF | SF | AF);
        f.set(FlagOp::Add, 1, 0xff, 1, 0x100);
        assert_eq!(f.get() & STATUS, CF | ZF | PF | AF);
        f.set(FlagOp::Sub, 4, 0, 1, u64::MAX);
        assert_eq!(f.get() & STATUS, CF | SF | PF | AF);
        assert!(f.cond(cc::B));
        assert!(!f.cond(cc::G));
        assert!(f.cond(cc::L));
        f.set(
            FlagOp::Sub,
            8,
            0x8000_0000_0000_0000,
            1,
            0x7fff_ffff_ffff_ffff,
        );
        assert_eq!(f.get() & (OF | CF | SF), OF);
        f.set_incdec(FlagOp::Inc, 2, 0);
        assert_eq!(f.get() & STATUS, ZF | PF | AF);
    }
}
