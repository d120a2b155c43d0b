//! Byte-level mutations shared by the targets: the havoc stage of a mutational fuzzer (bit flips,
//! interesting integers, arithmetic, chunk deletion and duplication, dictionary tokens, splicing),
//! plus re-encoding of text inputs as the other encodings the parsers accept.

use crate::rng::Rng;

/// Integers that sit on boundaries (sizes, signs, counts).
const INTERESTING: &[u32] = &[
    0,
    1,
    2,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x1000,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x1_0000,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFF0,
    0xFFFF_FFFF,
];

/// How to mutate: tokens worth inserting, the size cap, and a hot prefix (headers) that gets half
/// of the positions picked.
pub struct Havoc<'a> {
    /// Tokens inserted or overwritten whole.
    pub dict: &'a [&'a [u8]],
    /// Inputs never grow past this.
    pub max_len: usize,
    /// Half of the positions fall in `0..hot` (0: positions are uniform).
    pub hot: usize,
}

impl Havoc<'_> {
    fn pos(&self, rng: &mut Rng, len: usize) -> usize {
        if self.hot > 0 && rng.chance(50) {
            rng.below(len.min(self.hot))
        } else {
            rng.below(len)
        }
    }

    /// `parent` changed by 1 to 8 stacked mutations; `other` (another pool input) may be spliced in.
    pub fn mutate(&self, rng: &mut Rng, parent: &[u8], other: &[u8]) -> Vec<u8> {
        let mut b = parent.to_vec();
        for _ in 0..1 + rng.below(8) {
            let len = b.len();
            match rng.below(11) {
                0 if len > 0 => {
                    let at = self.pos(rng, len);
                    b[at] ^= 1 << rng.below(8);
                }
                1 if len > 0 => {
                    let at = self.pos(rng, len);
                    b[at] = rng.next_u64() as u8;
                }
                2 if len > 0 => {
                    // An interesting integer, 1, 2 or 4 bytes little-endian.
                    let v = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                    let n = [1, 2, 4][rng.below(3)].min(len);
                    let at = self.pos(rng, len + 1 - n);
                    b[at..at + n].copy_from_slice(&v[..n]);
                }
                3 if len >= 4 => {
                    // Small arithmetic on a 32-bit little-endian field.
                    let at = self.pos(rng, len - 3);
                    let v = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
                    let delta = 1 + rng.below(32) as u32;
                    let v = if rng.chance(50) {
                        v.wrapping_add(delta)
                    } else {
                        v.wrapping_sub(delta)
                    };
                    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
                4 if len > 0 => {
                    let at = rng.below(len);
                    let n = rng.below((len - at).min(64) + 1);
                    b.drain(at..at + n);
                }
                5 if len > 1 => {
                    let from = rng.below(len);
                    let to = (from + 1 + rng.below(128)).min(len);
                    let chunk = b[from..to].to_vec();
                    let at = rng.below(len + 1);
                    b.splice(at..at, chunk);
                }
                6 if !self.dict.is_empty() => {
                    let token = self.dict[rng.below(self.dict.len())];
                    let at = rng.below(len + 1);
                    b.splice(at..at, token.iter().copied());
                }
                7 if !self.dict.is_empty() && len > 0 => {
                    let token = self.dict[rng.below(self.dict.len())];
                    let at = self.pos(rng, len);
                    let end = (at + token.len()).min(len);
                    b[at..end].copy_from_slice(&token[..end - at]);
                }
                8 if !other.is_empty() => {
                    // Splice: our head, the other input's tail.
                    let cut = rng.below(len + 1);
                    let from = rng.below(other.len());
                    b.truncate(cut);
                    b.extend_from_slice(&other[from..]);
                }
                9 => b.truncate(rng.below(len + 1)),
                _ if len > 0 => {
                    // A run of one byte.
                    let at = rng.below(len);
                    let n = 1 + rng.below(32);
                    let byte = rng.next_u64() as u8;
                    b.splice(at..at, std::iter::repeat_n(byte, n));
                }
                _ => b.push(rng.next_u64() as u8),
            }
        }
        b.truncate(self.max_len);
        b
    }
}

/// Text re-encoded, sometimes, the ways the parsers must also read: UTF-16LE with a BOM (maybe with
/// an odd trailing byte), a UTF-8 BOM, a UTF-16BE BOM in front of 8-bit text.
pub fn reencode(rng: &mut Rng, bytes: Vec<u8>) -> Vec<u8> {
    match rng.below(12) {
        0 => {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let mut out = vec![0xFF, 0xFE];
            out.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
            if rng.chance(30) {
                out.push(0x41);
            }
            out
        }
        1 => [&[0xEF, 0xBB, 0xBF][..], &bytes].concat(),
        2 => [&[0xFE, 0xFF][..], &bytes].concat(),
        _ => bytes,
    }
}
