//! AVX2 + FMA + F16C kernels (256-bit): one 32-element block per step; one weight row against
//! one activation row (`dot_*`), and tiles of weight rows against activation rows (`tile_*`).
//!
//! Integer products use `maddubs` (u8 x i8 -> i16 pairs), so the left operand must be
//! unsigned: signed weights go through the sign trick (|x| times y with x's sign). No i16
//! saturation is possible: the largest pair is 2 * 128 * 127 = 32512.
//!
//! # Safety (all `unsafe fn` here)
//! The CPU must have AVX2, FMA and F16C, and the slices must hold the blocks of `n` elements
//! (the dispatch table in `dispatch.rs` checks both): blocks are read through raw pointers.

use std::arch::x86_64::*;
use std::ptr::read_unaligned;

use super::blocks::*;
use super::table::{Kernels, Tile, N_TYPES, TILE_A, TILE_R};

pub fn supported() -> bool {
    crate::cpu::hardware() >= crate::cpu::Level::Avx2
}

pub static KERNELS: Kernels = Kernels {
    name: "avx2",
    dot: [
        dot_f32, dot_f16, dot_q4_0, dot_q4_1, dot_q5_0, dot_q8_0, dot_q4_k, dot_q6_k, dot_q5_k,
        dot_q5_1, dot_bf16, dot_q2_k, dot_q3_k, dot_iq4_nl,
    ],
    quant: [
        super::scalar::quantize_f32,
        quantize_f16,
        quantize_q8_0,
        quantize_q8_1,
        quantize_q8_0,
        quantize_q8_0,
        quantize_q8_k,
        quantize_q8_k,
        quantize_q8_k,
        quantize_q8_1,
        super::scalar::quantize_f32,
        quantize_q8_k,
        quantize_q8_k,
        quantize_q8_0,
    ],
    rows: [None; N_TYPES],
    tile: [
        None,
        None,
        Some(tile_q4_0),
        Some(tile_q4_1),
        Some(tile_q5_0),
        Some(tile_q8_0),
        Some(tile_q4_k),
        Some(tile_q6_k),
        Some(tile_q5_k),
        Some(tile_q5_1),
        None,
        Some(tile_q2_k),
        Some(tile_q3_k),
        Some(tile_iq4_nl),
    ],
};

// ---------------------------------------------------------------- helpers

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn ld256(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p.cast())
}

/// The f16s at `a` and `b` as f32 lanes 0 and 1.
///
/// Built as one u32 in a general register and moved with `vmovd`, which writes the whole
/// vector register: converting a lone u16 lets LLVM insert it (`vpinsrw`) into whatever
/// register is free, often the accumulator, chaining every block onto the previous FMA.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16_pair(a: *const u8, b: *const u8) -> __m128 {
    let lo = read_unaligned(a.cast::<u16>()) as u32;
    let hi = read_unaligned(b.cast::<u16>()) as u32;
    _mm_cvtph_ps(_mm_cvtsi32_si128((lo | hi << 16) as i32))
}

/// Product of the f16s at `a` and `b` (a weight scale times an activation scale).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16_mul(a: *const u8, b: *const u8) -> f32 {
    let v = f16_pair(a, b);
    _mm_cvtss_f32(_mm_mul_ss(v, _mm_movehdup_ps(v)))
}

/// The f16 at `p` (off the hot loops).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16_at(p: *const u8) -> f32 {
    _mm_cvtss_f32(f16_pair(p, p))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f32_at(p: *const u8) -> f32 {
    read_unaligned(p.cast::<f32>())
}

/// A tile's horizontal sums, in plain loops: a closure (`map`, `from_fn`) does not inherit the
/// target features, so it is not inlined and passes each register through memory.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_tile<const R: usize, const A: usize>(acc: &[[__m256; R]; A]) -> [[f32; R]; A] {
    let mut out = [[0f32; R]; A];
    for k in 0..A {
        for r in 0..R {
            out[k][r] = hsum_ps(acc[k][r]);
        }
    }
    out
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hmax_ps(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
}

/// 16 bytes of packed nibbles -> 32 bytes 0..=15: low nibbles first, then high nibbles
/// (the element order of Q4_0/Q4_1/Q5_0).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn nibbles32(p: *const u8) -> __m256i {
    let x = _mm_loadu_si128(p.cast());
    let both = _mm256_set_m128i(_mm_srli_epi16(x, 4), x);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// The 32 bits of `bits` -> 32 bytes, 0xFF where the bit is set (byte i <- bit i).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bytes_from_bits(bits: u32) -> __m256i {
    // Byte i first gets source byte i / 8 (shuffles stay within 128-bit lanes, and set1
    // repeats the four bytes in both), then is tested against its bit i % 8.
    let v = _mm256_set1_epi32(bits as i32);
    #[rustfmt::skip]
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
        2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
    );
    let v = _mm256_shuffle_epi8(v, spread);
    let sel = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(v, sel), sel)
}

/// Sum of u8 x i8 products in 8 i32 lanes (pairs via maddubs, then quads via madd).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_u8i8(x: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1))
}

/// Sum of i8 x i8 products in 8 i32 lanes, via |x| * (y with x's sign).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_i8i8(x: __m256i, y: __m256i) -> __m256i {
    dot_u8i8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

// ---------------------------------------------------------------- float dots

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (w.as_ptr().cast::<f32>(), a.as_ptr().cast::<f32>());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            let (x, y) = (
                _mm256_loadu_ps(w.add(i + 8 * k)),
                _mm256_loadu_ps(a.add(i + 8 * k)),
            );
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(w.add(i)), _mm256_loadu_ps(a.add(i)), acc[0]);
        i += 8;
    }
    let acc = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum_ps(acc);
    while i < n {
        s += read_unaligned(w.add(i)) * read_unaligned(a.add(i));
        i += 1;
    }
    s
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (w.as_ptr(), a.as_ptr());
    let ld = |p: *const u8, i: usize| _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * i).cast()));
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            *acc = _mm256_fmadd_ps(ld(w, i + 8 * k), ld(a, i + 8 * k), *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(ld(w, i), ld(a, i), acc[0]);
        i += 8;
    }
    let acc = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum_ps(acc);
    while i < n {
        s += f16_at(w.add(2 * i)) * f16_at(a.add(2 * i));
        i += 1;
    }
    s
}

/// BF16 weights against f32 activations: a bfloat16 widened to u32 and shifted up 16 bits
/// is its f32.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_bf16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (w.as_ptr(), a.as_ptr().cast::<f32>());
    let ld = |i: usize| {
        let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(w.add(2 * i).cast()));
        _mm256_castsi256_ps(_mm256_slli_epi32(h, 16))
    };
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            *acc = _mm256_fmadd_ps(ld(i + 8 * k), _mm256_loadu_ps(a.add(i + 8 * k)), *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(ld(i), _mm256_loadu_ps(a.add(i)), acc[0]);
        i += 8;
    }
    let acc = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum_ps(acc);
    while i < n {
        let x = f32::from_bits((read_unaligned(w.add(2 * i).cast::<u16>()) as u32) << 16);
        s += x * read_unaligned(a.add(i));
        i += 1;
    }
    s
}

// ---------------------------------------------------------------- 32-element block dots

/// Q4_0 x Q8_0 over blocks `from..to` (also the odd-block tail of the AVX-512 kernel).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_0_blocks(w: *const u8, a: *const u8, from: usize, to: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for i in from..to {
        let (wb, ab) = (w.add(i * Q4_0_BYTES), a.add(i * Q8_0_BYTES));
        let d = _mm256_set1_ps(f16_mul(wb, ab));
        let x = _mm256_sub_epi8(nibbles32(wb.add(2)), _mm256_set1_epi8(8));
        let p = dot_i8i8(x, ld256(ab.add(2)));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    q4_0_blocks(w.as_ptr(), a.as_ptr(), 0, n / QK)
}

/// Q5_1's 32 quants (0..=31): the nibbles with the fifth bits of `qh` at bit 4.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_1_quants(wb: *const u8) -> __m256i {
    let h = bytes_from_bits(read_unaligned(wb.add(4).cast::<u32>()));
    _mm256_or_si256(
        nibbles32(wb.add(8)),
        _mm256_and_si256(h, _mm256_set1_epi8(0x10)),
    )
}

/// Q5_1 x Q8_1: as [`q4_1_blocks`] with the quants of [`q5_1_quants`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (w.as_ptr(), a.as_ptr());
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0f32;
    for i in 0..n / QK {
        let (wb, ab) = (w.add(i * Q5_1_BYTES), a.add(i * Q8_1_BYTES));
        let d = _mm256_set1_ps(f16_mul(wb, ab));
        summs += f16_mul(wb.add(2), ab.add(2));
        let p = dot_u8i8(q5_1_quants(wb), ld256(ab.add(4)));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    hsum_ps(acc) + summs
}

/// Q4_1 x Q8_1: `d_w d_a sum(q_w q_a) + m_w s_a` per block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_1_blocks(w: *const u8, a: *const u8, from: usize, to: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0f32;
    for i in from..to {
        let (wb, ab) = (w.add(i * Q4_1_BYTES), a.add(i * Q8_1_BYTES));
        let d = _mm256_set1_ps(f16_mul(wb, ab));
        summs += f16_mul(wb.add(2), ab.add(2));
        let p = dot_u8i8(nibbles32(wb.add(4)), ld256(ab.add(4)));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    hsum_ps(acc) + summs
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    q4_1_blocks(w.as_ptr(), a.as_ptr(), 0, n / QK)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5_0_blocks(w: *const u8, a: *const u8, from: usize, to: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for i in from..to {
        let (wb, ab) = (w.add(i * Q5_0_BYTES), a.add(i * Q8_0_BYTES));
        let d = _mm256_set1_ps(f16_mul(wb, ab));
        // q - 16 as i8: the nibble itself if the fifth bit is set, else nibble | 0xF0.
        let hi = _mm256_andnot_si256(
            bytes_from_bits(read_unaligned(wb.add(2).cast::<u32>())),
            _mm256_set1_epi8(0xF0u8 as i8),
        );
        let x = _mm256_or_si256(nibbles32(wb.add(6)), hi);
        let p = dot_i8i8(x, ld256(ab.add(2)));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    q5_0_blocks(w.as_ptr(), a.as_ptr(), 0, n / QK)
}

/// IQ4_NL's 32 weights of the block at `wb` as i8 levels: each nibble ([`nibbles32`]) looked
/// up in the table, which sits in both 128-bit lanes as `vpshufb` looks up within a lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq4nl_levels(wb: *const u8) -> __m256i {
    let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast()));
    _mm256_shuffle_epi8(table, nibbles32(wb.add(2)))
}

/// IQ4_NL x Q8_0: as Q4_0 with the looked-up levels. No level is -128, so the sign trick of
/// [`dot_i8i8`] is exact (|level| <= 127; pairs at most 2 * 127 * 127).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_iq4_nl(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (w.as_ptr(), a.as_ptr());
    let mut acc = _mm256_setzero_ps();
    for i in 0..n / QK {
        let (wb, ab) = (w.add(i * IQ4_NL_BYTES), a.add(i * Q8_0_BYTES));
        let d = _mm256_set1_ps(f16_mul(wb, ab));
        let p = dot_i8i8(iq4nl_levels(wb), ld256(ab.add(2)));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    hsum_ps(acc)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_0_blocks(w: *const u8, a: *const u8, from: usize, to: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for i in from..to {
        let (wb, ab) = (w.add(i * Q8_0_BYTES), a.add(i * Q8_0_BYTES));
        let d = _mm256_set1_ps(f16_mul(wb, ab));
        let p = dot_i8i8(ld256(wb.add(2)), ld256(ab.add(2)));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    q8_0_blocks(w.as_ptr(), a.as_ptr(), 0, n / QK)
}

// ---------------------------------------------------------------- K-quant dots

/// Per-lane terms of `sum_j mins[j] * (bsums of sub-block j)`, Q4_K's min term: 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4k_min_terms(mn: &[u8; 8], bsums: *const u8) -> __m256i {
    // mins as i16, each twice: [m0, m0, m1, m1, ...] against the 16 bsums, summed in pairs.
    let m = _mm_loadl_epi64(mn.as_ptr().cast());
    let m = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
    _mm256_madd_epi16(m, ld256(bsums))
}

/// Per-lane terms of `32 * sum_g scale[g] * bsum[g]`, Q6_K's offset term (q is stored + 32):
/// 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q6k_offset_terms(scales: *const u8, bsums: *const u8) -> __m256i {
    let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(scales.cast()));
    _mm256_slli_epi32(_mm256_madd_epi16(sc, ld256(bsums)), 5)
}

/// Chunk `c` (0..4) of a Q4_K block's quants at `qs`: the nibbles (0..=15) of sub-blocks
/// `2c` (low) and `2c + 1` (high).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_chunk(qs: *const u8, c: usize) -> (__m256i, __m256i) {
    let m4 = _mm256_set1_epi8(0x0F);
    let q = ld256(qs.add(32 * c));
    (
        _mm256_and_si256(q, m4),
        _mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
    )
}

/// Chunk `c` (0..4) of a Q5_K block whose `qh` bytes are `qh`: the quants (0..=31) of
/// sub-blocks `2c` and `2c + 1`. The fifth bits are bits `2c` and `2c + 1` of the `qh`
/// bytes; the 16-bit shift only brings bits of the neighbouring byte into bits >= 2, which
/// the masks drop.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5k_chunk(qs: *const u8, qh: __m256i, c: usize) -> (__m256i, __m256i) {
    let m4 = _mm256_set1_epi8(0x0F);
    let q = ld256(qs.add(32 * c));
    let h = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c as i32));
    let h0 = _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(1)), 4);
    let h1 = _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(2)), 3);
    let lo = _mm256_or_si256(_mm256_and_si256(q, m4), h0);
    let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), h1);
    (lo, hi)
}

/// A K-quant dot product against Q8_K for blocks of `$bw` bytes starting `[d: f16][dmin: f16]`
/// with 12 bytes of 6-bit scales and mins at `$scales` (Q4_K, Q5_K): `$chunk` gives the unsigned quants
/// of chunk `$c` (sub-blocks `2c`, `2c + 1`) of the block at `$wb`. Each sub-block's 6-bit
/// scale times its i16 pair sums fits madd's i32; the mins come from Q8_K's block sums.
macro_rules! scale_min_dot {
    ($name:ident, $bw:expr, $scales:expr, |$wb:ident, $c:ident| $chunk:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $name(n: usize, w: &[u8], a: &[u8]) -> f32 {
            let (mut acc, mut accm) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            for i in 0..n / QK_K {
                let ($wb, ab) = (w.as_ptr().add(i * $bw), a.as_ptr().add(i * Q8_K_BYTES));
                let (sc, mn) = q4k_scales_mins(std::slice::from_raw_parts($wb.add($scales), 12));
                let y = ab.add(Q8_K_OFF_QS);
                let mut sumi = _mm256_setzero_si256();
                for $c in 0..4 {
                    let (lo, hi) = $chunk;
                    let plo = _mm256_maddubs_epi16(lo, ld256(y.add(64 * $c)));
                    let phi = _mm256_maddubs_epi16(hi, ld256(y.add(64 * $c + 32)));
                    let plo = _mm256_madd_epi16(plo, _mm256_set1_epi16(sc[2 * $c] as i16));
                    let phi = _mm256_madd_epi16(phi, _mm256_set1_epi16(sc[2 * $c + 1] as i16));
                    sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(plo, phi));
                }
                let yd = _mm_set1_ps(f32_at(ab));
                let dd = _mm_mul_ps(f16_pair($wb, $wb.add(2)), yd); // [d, dmin]
                let mins = q4k_min_terms(&mn, ab.add(Q8_K_OFF_BSUMS));
                acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(dd), _mm256_cvtepi32_ps(sumi), acc);
                let dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(dd));
                accm = _mm256_fmadd_ps(dmin, _mm256_cvtepi32_ps(mins), accm);
            }
            hsum_ps(_mm256_sub_ps(acc, accm))
        }
    };
}

scale_min_dot!(dot_q4_k, Q4_K_BYTES, Q4_K_OFF_SCALES, |wb, c| q4k_chunk(
    wb.add(Q4_K_OFF_QS),
    c
));
// Q5_K: u8 quants 0..=31 times i8 in pairs still fit maddubs' i16.
scale_min_dot!(dot_q5_k, Q5_K_BYTES, Q5_K_OFF_SCALES, |wb, c| q5k_chunk(
    wb.add(Q5_K_OFF_QS),
    ld256(wb.add(Q5_K_OFF_QH)),
    c
));

/// The four 32-byte groups of 6-bit quants (stored + 32) of one 128-element Q6_K half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_half(ql: *const u8, qh: *const u8) -> [__m256i; 4] {
    let m4 = _mm256_set1_epi8(0x0F);
    let m30 = _mm256_set1_epi8(0x30);
    let (l0, l1, h) = (ld256(ql), ld256(ql.add(32)), ld256(qh));
    // Each qh byte carries the top two bits of four elements: bits 0-1, 2-3, 4-5, 6-7;
    // move each pair to bits 4-5 (16-bit shifts are fine: the mask drops spilled bits).
    let h0 = _mm256_and_si256(_mm256_slli_epi16(h, 4), m30);
    let h1 = _mm256_and_si256(_mm256_slli_epi16(h, 2), m30);
    let h2 = _mm256_and_si256(h, m30);
    let h3 = _mm256_and_si256(_mm256_srli_epi16(h, 2), m30);
    [
        _mm256_or_si256(_mm256_and_si256(l0, m4), h0),
        _mm256_or_si256(_mm256_and_si256(l1, m4), h1),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), h2),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), h3),
    ]
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q6_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for i in 0..n / QK_K {
        let (wb, ab) = (&w[i * Q6_K_BYTES..], &a[i * Q8_K_BYTES..]);
        let (wp, y) = (wb.as_ptr(), ab.as_ptr().add(Q8_K_OFF_QS));
        let sc = wp.add(Q6_K_OFF_SCALES).cast::<i8>();
        let mut sumi = _mm256_setzero_si256();
        for h in 0..2 {
            let q = q6k_half(wp.add(64 * h), wp.add(Q6_K_OFF_QH + 32 * h));
            for (k, &q) in q.iter().enumerate() {
                // 16 i16 pair sums: lanes 0-7 are scale group g, lanes 8-15 group g + 1.
                let p = _mm256_maddubs_epi16(q, ld256(y.add(128 * h + 32 * k)));
                let g = 8 * h + 2 * k;
                let s = _mm256_set_m128i(
                    _mm_set1_epi16(*sc.add(g + 1) as i16),
                    _mm_set1_epi16(*sc.add(g) as i16),
                );
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s));
            }
        }
        let off = q6k_offset_terms(sc.cast(), ab.as_ptr().add(Q8_K_OFF_BSUMS));
        let sumi = _mm256_sub_epi32(sumi, off);
        let d = _mm256_set1_ps(f16_at(wp.add(Q6_K_OFF_D)) * f32_at(ab.as_ptr()));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}

// ---------------------------------------------------------------- K-quants of 16-element groups

// Q2_K and Q3_K give every 16 elements their own scale: a 32-element chunk of quants meets
// two scales, which maddubs' 16 pair sums take as eight lanes each (low and high 128 bits).

/// The eight scales of half `h` (groups `8h..8h + 8`) of a block's 16 i16 scales, in both
/// 128-bit lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn half_scales(sc: __m256i, h: usize) -> __m256i {
    if h == 0 {
        _mm256_permute2x128_si256::<0x00>(sc, sc)
    } else {
        _mm256_permute2x128_si256::<0x11>(sc, sc)
    }
}

/// Scales of chunk `j` (0..4) of a half, from [`half_scales`]: group `2j`'s scale in the eight
/// i16 lanes of the low 128 bits, group `2j + 1`'s in those of the high 128 bits.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn chunk_scales(s: __m256i, j: usize) -> __m256i {
    // Byte pairs of lane i16 2j (low half) and 2j + 1 (high half), repeated.
    let (lo, hi) = (4 * j as i16, 4 * j as i16 + 2);
    let pick = _mm256_set_m128i(
        _mm_set1_epi16(hi | (hi + 1) << 8),
        _mm_set1_epi16(lo | (lo + 1) << 8),
    );
    _mm256_shuffle_epi8(s, pick)
}

/// `sum_g scale_g * sum(q y)` over the eight 16-element groups of half `h` of a Q2_K / Q3_K
/// block, in 8 i32 lanes: `q` holds the half's four 32-element chunks of unsigned quants
/// (element order), `sc` the block's 16 scales as i16, `y` the half's 128 Q8_K values.
/// Pairs of quants <= 7 times i8 fit maddubs' i16; a 6-bit scale times a pair sum fits i32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn groups16_half(q: &[__m256i; 4], sc: __m256i, h: usize, y: *const u8) -> __m256i {
    let s = half_scales(sc, h);
    let mut sum = _mm256_setzero_si256();
    for (j, &q) in q.iter().enumerate() {
        let p = _mm256_maddubs_epi16(q, ld256(y.add(32 * j)));
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(p, chunk_scales(s, j)));
    }
    sum
}

/// The four 32-element chunks of two-bit quants (0..=3) of the 32 bytes at `qs` (one half
/// of a Q2_K / Q3_K block): chunk `j` is bits `2j..2j + 2` of every byte. The 16-bit shifts
/// bring bits of the neighbouring byte only into bits >= 2, which the mask drops.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn two_bit_half(qs: *const u8) -> [__m256i; 4] {
    let m3 = _mm256_set1_epi8(3);
    let b = ld256(qs);
    [
        _mm256_and_si256(b, m3),
        _mm256_and_si256(_mm256_srli_epi16(b, 2), m3),
        _mm256_and_si256(_mm256_srli_epi16(b, 4), m3),
        _mm256_and_si256(_mm256_srli_epi16(b, 6), m3),
    ]
}

/// A Q2_K block's 16 scales (low nibbles) and 16 mins (high nibbles), as i16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q2k_scales_mins(wb: *const u8) -> (__m256i, __m256i) {
    let s = _mm_loadu_si128(wb.cast());
    let m4 = _mm_set1_epi8(0x0F);
    (
        _mm256_cvtepu8_epi16(_mm_and_si128(s, m4)),
        _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s, 4), m4)),
    )
}

/// Q2_K x Q8_K: per block `d yd sum_g sc_g sum(q y)` from the quants and `dmin yd sum_g m_g
/// bsum_g` from Q8_K's block sums (one per group), each in its own accumulator, subtracted at
/// the end (as [`scale_min_dot`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q2_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (mut acc, mut accm) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for i in 0..n / QK_K {
        let (wb, ab) = (
            w.as_ptr().add(i * Q2_K_BYTES),
            a.as_ptr().add(i * Q8_K_BYTES),
        );
        let (sc, mn) = q2k_scales_mins(wb);
        let y = ab.add(Q8_K_OFF_QS);
        let mut sumi = _mm256_setzero_si256();
        for h in 0..2 {
            let q = two_bit_half(wb.add(Q2_K_OFF_QS + 32 * h));
            sumi = _mm256_add_epi32(sumi, groups16_half(&q, sc, h, y.add(128 * h)));
        }
        let mins = _mm256_madd_epi16(mn, ld256(ab.add(Q8_K_OFF_BSUMS)));
        let dm = f16_pair(wb.add(Q2_K_OFF_D), wb.add(Q2_K_OFF_DMIN));
        let dd = _mm_mul_ps(dm, _mm_set1_ps(f32_at(ab))); // [d yd, dmin yd]
        acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(dd), _mm256_cvtepi32_ps(sumi), acc);
        let dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(dd));
        accm = _mm256_fmadd_ps(dmin, _mm256_cvtepi32_ps(mins), accm);
    }
    hsum_ps(_mm256_sub_ps(acc, accm))
}

/// A Q3_K block's 16 scales minus 32, as i16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3k_scales16(wb: *const u8) -> __m256i {
    let s = q3k_scales(std::slice::from_raw_parts(wb.add(Q3_K_OFF_SCALES), 12));
    _mm256_cvtepi8_epi16(_mm_loadu_si128(s.as_ptr().cast()))
}

/// Half `h` of a Q3_K block as [`two_bit_half`]'s four chunks of `q + 4` (0..=7): the two low
/// bits with the third bit, bit `4h + j` of the `hmask` bytes `hm` for chunk `j`, at bit 2.
/// The 16-bit shift (by at most 7) moves bits of the neighbouring byte only into bits >= 1,
/// which the mask drops.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3k_half(wb: *const u8, hm: __m256i, h: usize) -> [__m256i; 4] {
    let mut q = two_bit_half(wb.add(Q3_K_OFF_QS + 32 * h));
    let one = _mm256_set1_epi8(1);
    for (j, q) in q.iter_mut().enumerate() {
        let b = _mm256_srl_epi16(hm, _mm_cvtsi32_si128((4 * h + j) as i32));
        *q = _mm256_or_si256(*q, _mm256_slli_epi16(_mm256_and_si256(b, one), 2));
    }
    q
}

/// Per-lane terms of `4 * sum_g scale_g * bsum_g`, Q3_K's offset term (its quants go into the
/// products as q + 4): 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3k_offset_terms(sc: __m256i, bsums: *const u8) -> __m256i {
    _mm256_slli_epi32(_mm256_madd_epi16(sc, ld256(bsums)), 2)
}

/// Q3_K x Q8_K: the quants taken unsigned (q + 4) and the offset taken back through Q8_K's
/// block sums, in integers: the same i32 block sum as `sum_g scale_g sum(q y)`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q3_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for i in 0..n / QK_K {
        let (wb, ab) = (
            w.as_ptr().add(i * Q3_K_BYTES),
            a.as_ptr().add(i * Q8_K_BYTES),
        );
        let sc = q3k_scales16(wb);
        let hm = ld256(wb);
        let y = ab.add(Q8_K_OFF_QS);
        let mut sumi = _mm256_setzero_si256();
        for h in 0..2 {
            let q = q3k_half(wb, hm, h);
            sumi = _mm256_add_epi32(sumi, groups16_half(&q, sc, h, y.add(128 * h)));
        }
        let sumi = _mm256_sub_epi32(sumi, q3k_offset_terms(sc, ab.add(Q8_K_OFF_BSUMS)));
        let d = _mm256_set1_ps(f16_at(wb.add(Q3_K_OFF_D)) * f32_at(ab));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}

// ---------------------------------------------------------------- tiles (prefill)

// `R` weight rows against `A` activation rows (the dispatch table's `TILE_R x TILE_A` tile,
// taken by prefill and by batched decode): each weight block is unpacked once for the `A`
// activation rows, and each activation scale converted once for the `R` weight rows. Every
// (weight row, activation row) pair takes exactly the operations of its one-row dot above,
// in the same order, so a tile equals its `R x A` dots bit for bit
// (`quant::tests::rows_and_tile_match_single_dots`). Results are `out[a][r]`.

/// An i8 x i8 tile over 32-element blocks of `$bw` bytes whose scale is their first f16:
/// `$x` turns the weight block at `$wb` into 32 signed bytes.
macro_rules! i8_tile {
    ($name:ident, $bw:expr, |$wb:ident| $x:expr) => {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name<const R: usize, const A: usize>(
            n: usize,
            w: [*const u8; R],
            a: [*const u8; A],
        ) -> [[f32; R]; A] {
            let mut acc = [[_mm256_setzero_ps(); R]; A];
            let (mut y, mut ad) = ([_mm256_setzero_si256(); A], [0f32; A]);
            for i in 0..n / QK {
                for k in 0..A {
                    let ab = a[k].add(i * Q8_0_BYTES);
                    (y[k], ad[k]) = (ld256(ab.add(2)), f16_at(ab));
                }
                for r in 0..R {
                    let $wb = w[r].add(i * $bw);
                    let x: __m256i = $x;
                    let (ax, wd) = (_mm256_sign_epi8(x, x), f16_at($wb));
                    for k in 0..A {
                        let p = dot_u8i8(ax, _mm256_sign_epi8(y[k], x));
                        let d = _mm256_set1_ps(wd * ad[k]);
                        acc[k][r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[k][r]);
                    }
                }
            }
            hsum_tile(&acc)
        }
    };
}

i8_tile!(q4_0_tile, Q4_0_BYTES, |wb| _mm256_sub_epi8(
    nibbles32(wb.add(2)),
    _mm256_set1_epi8(8)
));
i8_tile!(q5_0_tile, Q5_0_BYTES, |wb| _mm256_or_si256(
    nibbles32(wb.add(6)),
    _mm256_andnot_si256(
        bytes_from_bits(read_unaligned(wb.add(2).cast::<u32>())),
        _mm256_set1_epi8(0xF0u8 as i8),
    )
));
i8_tile!(q8_0_tile, Q8_0_BYTES, |wb| ld256(wb.add(2)));
i8_tile!(iq4_nl_tile, IQ4_NL_BYTES, |wb| iq4nl_levels(wb));

/// A u8 x i8 tile over 32-element blocks of `$bw` bytes starting `[d: f16][m: f16]`,
/// against Q8_1 (Q4_1, Q5_1): `$u` turns the weight block at `$wb` into 32 unsigned bytes.
macro_rules! offset_tile {
    ($name:ident, $bw:expr, |$wb:ident| $u:expr) => {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name<const R: usize, const A: usize>(
            n: usize,
            w: [*const u8; R],
            a: [*const u8; A],
        ) -> [[f32; R]; A] {
            let mut acc = [[_mm256_setzero_ps(); R]; A];
            let mut summs = [[0f32; R]; A];
            let mut y = [_mm256_setzero_si256(); A];
            let (mut ad, mut as_) = ([0f32; A], [0f32; A]);
            for i in 0..n / QK {
                for k in 0..A {
                    let ab = a[k].add(i * Q8_1_BYTES);
                    (y[k], ad[k], as_[k]) = (ld256(ab.add(4)), f16_at(ab), f16_at(ab.add(2)));
                }
                for r in 0..R {
                    let $wb = w[r].add(i * $bw);
                    let u: __m256i = $u;
                    let (wd, wm) = (f16_at($wb), f16_at($wb.add(2)));
                    for k in 0..A {
                        summs[k][r] += wm * as_[k];
                        let p = dot_u8i8(u, y[k]);
                        let d = _mm256_set1_ps(wd * ad[k]);
                        acc[k][r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[k][r]);
                    }
                }
            }
            let mut out = hsum_tile(&acc);
            for (o, s) in out.iter_mut().zip(&summs) {
                o.iter_mut().zip(s).for_each(|(o, s)| *o += s);
            }
            out
        }
    };
}

offset_tile!(q4_1_tile, Q4_1_BYTES, |wb| nibbles32(wb.add(4)));
offset_tile!(q5_1_tile, Q5_1_BYTES, |wb| q5_1_quants(wb));

/// The tile of [`scale_min_dot`]'s types: `R` weight rows against `A` Q8_K rows, the same
/// operations per (row, activation) pair as the dot.
macro_rules! scale_min_tile {
    ($name:ident, $bw:expr, $scales:expr, |$wb:ident, $c:ident| $chunk:expr) => {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name<const R: usize, const A: usize>(
            n: usize,
            w: [*const u8; R],
            a: [*const u8; A],
        ) -> [[f32; R]; A] {
            let (mut acc, mut accm) =
                ([[_mm256_setzero_ps(); R]; A], [[_mm256_setzero_ps(); R]; A]);
            for i in 0..n / QK_K {
                let (mut sc, mut mn, mut dd) =
                    ([[0u8; 8]; R], [[0u8; 8]; R], [_mm_setzero_ps(); R]);
                for r in 0..R {
                    let wb = w[r].add(i * $bw);
                    (sc[r], mn[r]) =
                        q4k_scales_mins(std::slice::from_raw_parts(wb.add($scales), 12));
                    dd[r] = f16_pair(wb, wb.add(2)); // [d, dmin]
                }
                let mut sumi = [[_mm256_setzero_si256(); R]; A];
                for $c in 0..4 {
                    for r in 0..R {
                        let $wb = w[r].add(i * $bw);
                        let (lo, hi) = $chunk;
                        let slo = _mm256_set1_epi16(sc[r][2 * $c] as i16);
                        let shi = _mm256_set1_epi16(sc[r][2 * $c + 1] as i16);
                        for k in 0..A {
                            let y = a[k].add(i * Q8_K_BYTES + Q8_K_OFF_QS + 64 * $c);
                            let plo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, ld256(y)), slo);
                            let phi =
                                _mm256_madd_epi16(_mm256_maddubs_epi16(hi, ld256(y.add(32))), shi);
                            sumi[k][r] = _mm256_add_epi32(sumi[k][r], _mm256_add_epi32(plo, phi));
                        }
                    }
                }
                for k in 0..A {
                    let ab = a[k].add(i * Q8_K_BYTES);
                    let yd = _mm_set1_ps(f32_at(ab));
                    for r in 0..R {
                        let d = _mm_mul_ps(dd[r], yd);
                        let mins = q4k_min_terms(&mn[r], ab.add(Q8_K_OFF_BSUMS));
                        let (dq, dmin) = (
                            _mm256_broadcastss_ps(d),
                            _mm256_broadcastss_ps(_mm_movehdup_ps(d)),
                        );
                        acc[k][r] = _mm256_fmadd_ps(dq, _mm256_cvtepi32_ps(sumi[k][r]), acc[k][r]);
                        accm[k][r] = _mm256_fmadd_ps(dmin, _mm256_cvtepi32_ps(mins), accm[k][r]);
                    }
                }
            }
            for k in 0..A {
                for r in 0..R {
                    acc[k][r] = _mm256_sub_ps(acc[k][r], accm[k][r]);
                }
            }
            hsum_tile(&acc)
        }
    };
}

scale_min_tile!(q4_k_tile, Q4_K_BYTES, Q4_K_OFF_SCALES, |wb, c| q4k_chunk(
    wb.add(Q4_K_OFF_QS),
    c
));
scale_min_tile!(q5_k_tile, Q5_K_BYTES, Q5_K_OFF_SCALES, |wb, c| q5k_chunk(
    wb.add(Q5_K_OFF_QS),
    ld256(wb.add(Q5_K_OFF_QH)),
    c
));

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_tile<const R: usize, const A: usize>(
    n: usize,
    w: [*const u8; R],
    a: [*const u8; A],
) -> [[f32; R]; A] {
    let mut acc = [[_mm256_setzero_ps(); R]; A];
    for i in 0..n / QK_K {
        let mut sumi = [[_mm256_setzero_si256(); R]; A];
        for h in 0..2 {
            for r in 0..R {
                let wp = w[r].add(i * Q6_K_BYTES);
                let sc = wp.add(Q6_K_OFF_SCALES).cast::<i8>();
                let q = q6k_half(wp.add(64 * h), wp.add(Q6_K_OFF_QH + 32 * h));
                for (j, &q) in q.iter().enumerate() {
                    let g = 8 * h + 2 * j;
                    let s = _mm256_set_m128i(
                        _mm_set1_epi16(*sc.add(g + 1) as i16),
                        _mm_set1_epi16(*sc.add(g) as i16),
                    );
                    for k in 0..A {
                        let y = a[k].add(i * Q8_K_BYTES + Q8_K_OFF_QS + 128 * h + 32 * j);
                        let p = _mm256_maddubs_epi16(q, ld256(y));
                        sumi[k][r] = _mm256_add_epi32(sumi[k][r], _mm256_madd_epi16(p, s));
                    }
                }
            }
        }
        for k in 0..A {
            let ab = a[k].add(i * Q8_K_BYTES);
            for r in 0..R {
                let wp = w[r].add(i * Q6_K_BYTES);
                let off = q6k_offset_terms(wp.add(Q6_K_OFF_SCALES), ab.add(Q8_K_OFF_BSUMS));
                let s = _mm256_sub_epi32(sumi[k][r], off);
                let d = _mm256_set1_ps(f16_at(wp.add(Q6_K_OFF_D)) * f32_at(ab));
                acc[k][r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc[k][r]);
            }
        }
    }
    hsum_tile(&acc)
}

/// The tile of [`dot_q2_k`]: the quants of a weight row's half unpacked once for the `A`
/// activation rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q2_k_tile<const R: usize, const A: usize>(
    n: usize,
    w: [*const u8; R],
    a: [*const u8; A],
) -> [[f32; R]; A] {
    let (mut acc, mut accm) = ([[_mm256_setzero_ps(); R]; A], [[_mm256_setzero_ps(); R]; A]);
    for i in 0..n / QK_K {
        let mut sumi = [[_mm256_setzero_si256(); R]; A];
        for h in 0..2 {
            for r in 0..R {
                let wb = w[r].add(i * Q2_K_BYTES);
                let (sc, _) = q2k_scales_mins(wb);
                let q = two_bit_half(wb.add(Q2_K_OFF_QS + 32 * h));
                for k in 0..A {
                    let y = a[k].add(i * Q8_K_BYTES + Q8_K_OFF_QS + 128 * h);
                    sumi[k][r] = _mm256_add_epi32(sumi[k][r], groups16_half(&q, sc, h, y));
                }
            }
        }
        for k in 0..A {
            let ab = a[k].add(i * Q8_K_BYTES);
            let yd = _mm_set1_ps(f32_at(ab));
            for r in 0..R {
                let wb = w[r].add(i * Q2_K_BYTES);
                let (_, mn) = q2k_scales_mins(wb);
                let mins = _mm256_madd_epi16(mn, ld256(ab.add(Q8_K_OFF_BSUMS)));
                let dm = f16_pair(wb.add(Q2_K_OFF_D), wb.add(Q2_K_OFF_DMIN));
                let dd = _mm_mul_ps(dm, yd);
                let (dq, dmin) = (
                    _mm256_broadcastss_ps(dd),
                    _mm256_broadcastss_ps(_mm_movehdup_ps(dd)),
                );
                acc[k][r] = _mm256_fmadd_ps(dq, _mm256_cvtepi32_ps(sumi[k][r]), acc[k][r]);
                accm[k][r] = _mm256_fmadd_ps(dmin, _mm256_cvtepi32_ps(mins), accm[k][r]);
            }
        }
    }
    for k in 0..A {
        for r in 0..R {
            acc[k][r] = _mm256_sub_ps(acc[k][r], accm[k][r]);
        }
    }
    hsum_tile(&acc)
}

/// The tile of [`dot_q3_k`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3_k_tile<const R: usize, const A: usize>(
    n: usize,
    w: [*const u8; R],
    a: [*const u8; A],
) -> [[f32; R]; A] {
    let mut acc = [[_mm256_setzero_ps(); R]; A];
    for i in 0..n / QK_K {
        let mut sc = [_mm256_setzero_si256(); R];
        for r in 0..R {
            sc[r] = q3k_scales16(w[r].add(i * Q3_K_BYTES));
        }
        let mut sumi = [[_mm256_setzero_si256(); R]; A];
        for h in 0..2 {
            for r in 0..R {
                let wb = w[r].add(i * Q3_K_BYTES);
                let q = q3k_half(wb, ld256(wb), h);
                for k in 0..A {
                    let y = a[k].add(i * Q8_K_BYTES + Q8_K_OFF_QS + 128 * h);
                    sumi[k][r] = _mm256_add_epi32(sumi[k][r], groups16_half(&q, sc[r], h, y));
                }
            }
        }
        for k in 0..A {
            let ab = a[k].add(i * Q8_K_BYTES);
            for r in 0..R {
                let wb = w[r].add(i * Q3_K_BYTES);
                let off = q3k_offset_terms(sc[r], ab.add(Q8_K_OFF_BSUMS));
                let s = _mm256_sub_epi32(sumi[k][r], off);
                let d = _mm256_set1_ps(f16_at(wb.add(Q3_K_OFF_D)) * f32_at(ab));
                acc[k][r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc[k][r]);
            }
        }
    }
    hsum_tile(&acc)
}

/// The dispatch table's tile entry point of a generic tile kernel.
macro_rules! tile_entry {
    ($name:ident, $k:ident) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $name(n: usize, w: [*const u8; TILE_R], a: [*const u8; TILE_A]) -> Tile {
            $k::<TILE_R, TILE_A>(n, w, a)
        }
    };
}

tile_entry!(tile_q4_0, q4_0_tile);
tile_entry!(tile_q4_1, q4_1_tile);
tile_entry!(tile_q5_0, q5_0_tile);
tile_entry!(tile_q8_0, q8_0_tile);
tile_entry!(tile_q4_k, q4_k_tile);
tile_entry!(tile_q6_k, q6_k_tile);
tile_entry!(tile_q5_k, q5_k_tile);
tile_entry!(tile_q5_1, q5_1_tile);
tile_entry!(tile_q2_k, q2_k_tile);
tile_entry!(tile_q3_k, q3_k_tile);
tile_entry!(tile_iq4_nl, iq4_nl_tile);

// ---------------------------------------------------------------- activation quantisers

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_f16(x: &[f32], dst: &mut [u8]) {
    let mut i = 0;
    while i + 8 <= x.len() {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(x.as_ptr().add(i)));
        _mm_storeu_si128(dst.as_mut_ptr().add(2 * i).cast(), h);
        i += 8;
    }
    super::scalar::quantize_f16(&x[i..], &mut dst[2 * i..]);
}

/// 32 floats times `id`, rounded half to even -> 32 i8 in element order at `out`; returns the
/// four 8-lane i32 vectors (for sums).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn round_pack32(v: &[__m256; 4], id: f32, out: *mut u8) -> [__m256i; 4] {
    let id = _mm256_set1_ps(id);
    let r = |v| {
        let s = _mm256_mul_ps(v, id);
        _mm256_cvtps_epi32(_mm256_round_ps::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(s))
    };
    let q = [r(v[0]), r(v[1]), r(v[2]), r(v[3])];
    store_i32x32_as_i8(&q, out);
    q
}

/// Packs 32 i32 (in range) to i8 in order. The packs interleave 128-bit lanes; the final
/// permute restores element order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store_i32x32_as_i8(q: &[__m256i; 4], out: *mut u8) {
    let p01 = _mm256_packs_epi32(q[0], q[1]);
    let p23 = _mm256_packs_epi32(q[2], q[3]);
    let b = _mm256_packs_epi16(p01, p23);
    let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(out.cast(), b);
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load32(x: *const f32) -> [__m256; 4] {
    [
        _mm256_loadu_ps(x),
        _mm256_loadu_ps(x.add(8)),
        _mm256_loadu_ps(x.add(16)),
        _mm256_loadu_ps(x.add(24)),
    ]
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn abs_ps(v: __m256) -> __m256 {
    _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
}

/// Q8_0/Q8_1 as llama.cpp's x86 path: d = amax / 127, q = round-half-even(x * (127 / amax)).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_01<const SUM: bool>(x: &[f32], dst: &mut [u8]) {
    let (bytes, hdr) = if SUM {
        (Q8_1_BYTES, 4)
    } else {
        (Q8_0_BYTES, 2)
    };
    for (i, b) in dst.chunks_exact_mut(bytes).take(x.len() / QK).enumerate() {
        let v = load32(x.as_ptr().add(i * QK));
        let m = _mm256_max_ps(
            _mm256_max_ps(abs_ps(v[0]), abs_ps(v[1])),
            _mm256_max_ps(abs_ps(v[2]), abs_ps(v[3])),
        );
        let amax = hmax_ps(m);
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let q = round_pack32(&v, id, b.as_mut_ptr().add(hdr));
        write_f16(b, 0, d);
        if SUM {
            let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            write_f16(b, 2, d * hsum_epi32(s) as f32);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_q8_0(x: &[f32], dst: &mut [u8]) {
    quantize_q8_01::<false>(x, dst)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_q8_1(x: &[f32], dst: &mut [u8]) {
    quantize_q8_01::<true>(x, dst)
}

/// Q8_K, bit-identical to the scalar reference (llama.cpp has no SIMD variant to follow).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_q8_k(x: &[f32], dst: &mut [u8]) {
    for (xb, b) in x.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Q8_K_BYTES)) {
        let xp = xb.as_ptr();
        let mut m = _mm256_setzero_ps();
        for k in 0..32 {
            m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(xp.add(8 * k))));
        }
        let amax = hmax_ps(m);
        if amax == 0.0 {
            b.fill(0);
            continue;
        }
        // The reference takes the sign of the first element reaching amax.
        let target = _mm256_set1_ps(amax);
        let first = (0..32)
            .find_map(|k| {
                let eq =
                    _mm256_cmp_ps::<_CMP_EQ_OQ>(abs_ps(_mm256_loadu_ps(xp.add(8 * k))), target);
                let bits = _mm256_movemask_ps(eq);
                (bits != 0).then(|| 8 * k + bits.trailing_zeros() as usize)
            })
            .unwrap_or(0);
        let iscale = -127.0 / xb[first];
        let cap = _mm256_set1_epi32(127);
        for c in 0..8 {
            let mut q = round_pack_q8k(load32(xp.add(32 * c)), iscale);
            for q in q.iter_mut() {
                *q = _mm256_min_epi32(*q, cap);
            }
            store_i32x32_as_i8(&q, b.as_mut_ptr().add(Q8_K_OFF_QS + 32 * c));
            for g in 0..2 {
                let s = hsum_epi32(_mm256_add_epi32(q[2 * g], q[2 * g + 1])) as i16;
                let o = Q8_K_OFF_BSUMS + 2 * (2 * c + g);
                b[o..o + 2].copy_from_slice(&s.to_le_bytes());
            }
        }
        b[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn round_pack_q8k(v: [__m256; 4], iscale: f32) -> [__m256i; 4] {
    let s = _mm256_set1_ps(iscale);
    let mut out = [_mm256_setzero_si256(); 4];
    for (o, v) in out.iter_mut().zip(v) {
        let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(v, s),
        );
        *o = _mm256_cvtps_epi32(r);
    }
    out
}
