//! Rendezvous scores: how much backend `b` wants row `r`.
//!
//! Each backend gets a keyed bijection `pi_b` of the row numbers `[0, R)` (R = 2^table_bits).
//! Its uniform draw for row `r` is `u = (pi_b(r) + 0.5) / R`, and its weighted rendezvous score
//! is the exponential race time `s = -ln(u) / w` (smaller wins; the row's ranking is the order of
//! `s`). Because `pi_b` is a bijection, every backend sees every percentile exactly once
//! (stratified sampling), which halves the spread of rows-as-primary compared with independent
//! hash draws, while the score of `(row, b)` still depends only on the seed, the row, b's name
//! and b's weight. That independence from the rest of the pool is what makes drains and adds
//! move only the rows they must (see docs/development/table-algorithm.md).
//!
//! Determinism: the only floating-point operations are IEEE-754 `+ - * /` (correctly rounded on
//! every platform; Rust never contracts them into FMAs), so `ln` is computed here rather than
//! by the platform's libm, whose last bit may differ between machines.
//!
//! Must not do: anything that depends on which other backends are in the pool.

use std::sync::{Arc, OnceLock};

use crate::config::TABLE_BITS_MAX;
use crate::hash::{key_halves, siphash13};

/// Rounds of the row permutation. Three rounds of add/multiply/xor-shift already pass the
/// balance benchmark; the fourth is cheap insurance against structure between two backends'
/// permutations.
const ROUNDS: usize = 4;

/// The per-backend constants, derived from (seed, name) only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendKey {
    /// Tie-breaker when two scores are equal (then the name decides).
    pub id: u64,
    add: [u64; ROUNDS],
    mul: [u64; ROUNDS],
    mul_inv: [u64; ROUNDS],
}

/// Inverse of an odd number modulo 2^64 (Newton's iteration doubles the correct bits).
fn inverse_odd(m: u64) -> u64 {
    let mut x = m; // correct to 3 bits for odd m
    for _ in 0..5 {
        x = x.wrapping_mul(2u64.wrapping_sub(m.wrapping_mul(x)));
    }
    x
}

impl BackendKey {
    pub fn new(seed: &[u8; 16], name: &str) -> BackendKey {
        let (k0, k1) = key_halves(seed);
        let mut buf = Vec::with_capacity(name.len() + 2);
        let mut h = |tag: u8, round: u8| {
            buf.clear();
            buf.extend_from_slice(&[tag, round]);
            buf.extend_from_slice(name.as_bytes());
            siphash13(k0, k1, &buf)
        };
        let id = h(b'i', 0);
        let mut add = [0; ROUNDS];
        let mut mul = [0; ROUNDS];
        let mut mul_inv = [0; ROUNDS];
        for r in 0..ROUNDS {
            add[r] = h(b'a', r as u8);
            mul[r] = h(b'm', r as u8) | 1;
            mul_inv[r] = inverse_odd(mul[r]);
        }
        BackendKey {
            id,
            add,
            mul,
            mul_inv,
        }
    }
}

/// The permutations of `[0, 2^bits)`: one round is `x += a; x *= m (odd); x ^= x >> s`, each
/// step invertible modulo 2^bits. Multiplication carries low bits up, the shift carries high
/// bits down, so a few rounds mix every bit into every other.
#[derive(Clone, Copy, Debug)]
pub struct Perm {
    bits: u32,
    mask: u64,
    shift: u32,
}

impl Perm {
    pub fn new(bits: u8) -> Perm {
        let bits = u32::from(bits);
        Perm {
            bits,
            mask: (1u64 << bits) - 1,
            shift: bits.div_ceil(2),
        }
    }

    /// `pi_b(row)`: the percentile index backend `k` draws for `row`.
    #[inline]
    pub fn forward(&self, k: &BackendKey, row: u32) -> u32 {
        let mut x = u64::from(row);
        for r in 0..ROUNDS {
            x = x.wrapping_add(k.add[r]) & self.mask;
            x = x.wrapping_mul(k.mul[r]) & self.mask;
            x ^= x >> self.shift;
        }
        x as u32
    }

    /// `sigma_b(i) = pi_b^-1(i)`: the row where backend `k` draws percentile index `i`.
    #[inline]
    pub fn inverse(&self, k: &BackendKey, i: u32) -> u32 {
        let mut x = u64::from(i);
        for r in (0..ROUNDS).rev() {
            // Undo x ^= x >> s: with 2s >= bits, two steps recover every bit.
            let mut y = x;
            let mut sh = self.shift;
            while sh < self.bits {
                y = x ^ (y >> self.shift);
                sh += self.shift;
            }
            x = y;
            x = x.wrapping_mul(k.mul_inv[r]) & self.mask;
            x = x.wrapping_sub(k.add[r]) & self.mask;
        }
        x as u32
    }
}

/// `2 * atanh(t)` by its series, for `|t| <= 0.18` (terms up to t^25: below 1e-18 relative).
fn two_atanh(t: f64) -> f64 {
    let t2 = t * t;
    let mut acc = 1.0 / 25.0;
    let mut d = 23.0;
    while d >= 1.0 {
        acc = acc * t2 + 1.0 / d;
        d -= 2.0;
    }
    2.0 * t * acc
}

const LN2: f64 = std::f64::consts::LN_2;

/// `-ln(u)` for `u = (2i + 1) / 2^(bits+1)`, with IEEE basic operations only.
pub fn neg_ln_percentile(i: u32, bits: u8) -> f64 {
    let n = 2 * u64::from(i) + 1; // numerator, odd
    let d = 1u64 << (bits + 1); // denominator
    let j = d - n; // 1 - u = j / d
    if 4 * j <= d {
        // u >= 3/4: -ln(u) = ln(d / n) = 2 atanh((d - n) / (d + n)), no cancellation near u = 1.
        two_atanh(j as f64 / (d + n) as f64)
    } else {
        // ln(n) = e ln2 + ln(m), m in [sqrt(1/2), sqrt(2)); then -ln(u) = (bits+1) ln2 - ln(n).
        let mut e = 63 - n.leading_zeros() as i32;
        let mut m = n as f64 / (1u64 << e) as f64;
        if m > std::f64::consts::SQRT_2 {
            m /= 2.0;
            e += 1;
        }
        let ln_n = f64::from(e) * LN2 + two_atanh((m - 1.0) / (m + 1.0));
        f64::from(bits + 1) * LN2 - ln_n
    }
}

/// `-ln(u)` for every percentile index of a table of `2^bits` rows, computed once per size.
pub fn neg_ln_table(bits: u8) -> Arc<[f64]> {
    static TABLES: [OnceLock<Arc<[f64]>>; TABLE_BITS_MAX as usize + 1] =
        [const { OnceLock::new() }; TABLE_BITS_MAX as usize + 1];
    let make = || {
        (0..1u32 << bits)
            .map(|i| neg_ln_percentile(i, bits))
            .collect::<Arc<[f64]>>()
    };
    match TABLES.get(usize::from(bits)) {
        Some(cell) => cell.get_or_init(make).clone(),
        None => make(),
    }
}

/// A comparable score: smaller is better. The f64 is positive, so its bit pattern orders like
/// its value; `rank` orders equal scores by (id, name).
pub type Key = (u64, u32);

#[inline]
pub fn score_bits(neg_ln: f64, weight: u32) -> u64 {
    (neg_ln / f64::from(weight)).to_bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_bijection_and_inverse_inverts() {
        for bits in [8u8, 9, 13, 16] {
            let p = Perm::new(bits);
            let k = BackendKey::new(&[3; 16], "b");
            let mut seen = vec![false; 1 << bits];
            for r in 0..1u32 << bits {
                let i = p.forward(&k, r);
                assert!(!seen[i as usize]);
                seen[i as usize] = true;
                assert_eq!(p.inverse(&k, i), r);
            }
        }
    }

    #[test]
    fn ln_matches_libm_closely_and_is_strictly_monotone() {
        for bits in [8u8, 16, 20] {
            let r = 1u32 << bits;
            let step = if bits > 16 { 97 } else { 1 };
            let mut idx: Vec<u32> = (0..r).step_by(step).chain([r - 2, r - 1]).collect();
            idx.sort_unstable();
            idx.dedup();
            let mut prev = f64::INFINITY;
            for i in idx {
                let v = neg_ln_percentile(i, bits);
                let u = (2.0 * f64::from(i) + 1.0) / f64::from(2 * r);
                let libm = -u.ln();
                assert!((v - libm).abs() <= 1e-13 * libm, "{i} {v} {libm}");
                assert!(v < prev);
                prev = v;
            }
        }
    }
}
