//! Lazy EFLAGS.
//!
//! Flag-producing instructions record the kind of operation, its operands, result and size; the six
//! status flags (CF, PF, AF, ZF, SF, OF) are computed only when something reads them (jcc, setcc,
//! cmovcc, adc, sbb, pushf, ...). Bits that no lazy operation covers (IF, DF, ...) live in `base`.

use iced_x86::ConditionCode;

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

    /// Evaluates a jcc/setcc/cmovcc condition.
    #[inline]
    pub(crate) fn cond(&self, cc: ConditionCode) -> bool {
        use ConditionCode as C;
        match self.op {
            FlagOp::Sub => {
                let (a, b) = (self.a, self.b);
                let (sa, sb) = (sext(a, self.size), sext(b, self.size));
                match cc {
                    C::b => return a < b,
                    C::ae => return a >= b,
                    C::e => return a == b,
                    C::ne => return a != b,
                    C::be => return a <= b,
                    C::a => return a > b,
                    C::l => return sa < sb,
                    C::ge => return sa >= sb,
                    C::le => return sa <= sb,
                    C::g => return sa > sb,
                    _ => {}
                }
            }
            FlagOp::None => {}
            _ => match cc {
                C::e => return self.res == 0,
                C::ne => return self.res != 0,
                C::s => return self.res & sign_bit(self.size) != 0,
                C::ns => return self.res & sign_bit(self.size) == 0,
                _ => {}
            },
        }
        let f = self.get();
        let has = |bit: u64| f & bit != 0;
        match cc {
            C::None => true,
            C::o => has(OF),
            C::no => !has(OF),
            C::b => has(CF),
            C::ae => !has(CF),
            C::e => has(ZF),
            C::ne => !has(ZF),
            C::be => has(CF) || has(ZF),
            C::a => !has(CF) && !has(ZF),
            C::s => has(SF),
            C::ns => !has(SF),
            C::p => has(PF),
            C::np => !has(PF),
            C::l => has(SF) != has(OF),
            C::ge => has(SF) == has(OF),
            C::le => has(ZF) || has(SF) != has(OF),
            C::g => !has(ZF) && has(SF) == has(OF),
        }
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
        assert!(f.cond(ConditionCode::b));
        assert!(!f.cond(ConditionCode::g));
        assert!(f.cond(ConditionCode::l));
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
