//! AVX-512 kernels (512-bit): two 32-element blocks, or 64 elements of a K-quant block, per
//! step. Two variants of the integer dots, generated from one body by `int_kernels!`:
//! `vnni` uses `vpdpbusd`/`vpdpwssd` (multiply-add straight into i32 lanes), `bw` emulates
//! them with `vpmaddubsw` + `vpmaddwd` + add. They must be separate functions: with VNNI
//! enabled, LLVM may fuse `vpmaddwd` + add into `vpdpwssd` by itself, which would fault on a
//! CPU with only AVX512BW.
//!
//! Without `vpsignb` on 512-bit vectors, signed weights are handled by offset instead:
//! `sum((u - c) y) = sum(u y) - c sum(y)`, with `u` the stored unsigned quant.
//!
//! # Safety (all `unsafe fn` here)
//! The CPU must have the enabled features and the slices must hold the blocks of `n`
//! elements (the dispatch table in `dispatch.rs` checks both): blocks are read through raw
//! pointers.

use std::arch::x86_64::*;
use std::ptr::read_unaligned;

use super::avx2::{self, f16_at, f16_pair, f32_at, ld256};
use super::blocks::*;
use super::table::{Kernels, QuantFn, Tile, N_TYPES, ROWS_R, TILE_A, TILE_R};

pub fn supported_bw() -> bool {
    crate::cpu::hardware() >= crate::cpu::Level::Avx512
}

pub fn supported_vnni() -> bool {
    crate::cpu::hardware() >= crate::cpu::Level::Avx512Vnni
}

const QUANT: [QuantFn; N_TYPES] = [
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
];

macro_rules! table {
    ($name:literal, $m:ident) => {
        Kernels {
            name: $name,
            dot: [
                dot_f32,
                dot_f16,
                $m::dot_q4_0,
                $m::dot_q4_1,
                $m::dot_q5_0,
                $m::dot_q8_0,
                $m::dot_q4_k,
                $m::dot_q6_k,
                // Types without AVX-512 kernels run the AVX2 ones (every AVX-512 CPU has
                // AVX2, FMA and F16C).
                super::avx2::dot_q5_k,
                super::avx2::dot_q5_1,
                super::avx2::dot_bf16,
                super::avx2::dot_q2_k,
                super::avx2::dot_q3_k,
                super::avx2::dot_iq4_nl,
            ],
            quant: QUANT,
            rows: [
                None,
                None,
                Some($m::rows_q4_0),
                Some($m::rows_q4_1),
                Some($m::rows_q5_0),
                Some($m::rows_q8_0),
                Some($m::rows_q4_k),
                Some($m::rows_q6_k),
                None,
                None,
                None,
                None,
                None,
                None,
            ],
            tile: [
                None,
                None,
                Some($m::tile_q4_0),
                Some($m::tile_q4_1),
                Some($m::tile_q5_0),
                Some($m::tile_q8_0),
                Some($m::tile_q4_k),
                Some($m::tile_q6_k),
                Some(super::avx2::tile_q5_k),
                Some(super::avx2::tile_q5_1),
                None,
                Some(super::avx2::tile_q2_k),
                Some(super::avx2::tile_q3_k),
                Some(super::avx2::tile_iq4_nl),
            ],
        }
    };
}

pub static KERNELS_BW: Kernels = table!("avx512bw", bw);
pub static KERNELS_VNNI: Kernels = table!("avx512vnni", vnni);

// ---------------------------------------------------------------- helpers

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn ld512(p: *const u8) -> __m512i {
    _mm512_loadu_si512(p.cast())
}

/// 32 bytes at `a` then 32 bytes at `b`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn two256(a: *const u8, b: *const u8) -> __m512i {
    _mm512_inserti64x4(_mm512_castsi256_si512(ld256(a)), ld256(b), 1)
}

/// The 16 nibble bytes of two blocks at `a` and `b` -> 64 bytes 0..=15 in element order:
/// [a low nibbles, a high nibbles, b low nibbles, b high nibbles].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn nibbles_2blocks(a: *const u8, b: *const u8) -> __m512i {
    let ab = _mm256_set_m128i(_mm_loadu_si128(b.cast()), _mm_loadu_si128(a.cast()));
    let z = _mm512_castsi256_si512(ab);
    // 128-bit lanes [a, a, b, b], then shift every other lane by 4.
    let z = _mm512_shuffle_i64x2::<0b01_01_00_00>(z, z);
    #[rustfmt::skip]
    let shifts = _mm512_set_epi64(
        0x0004_0004_0004_0004, 0x0004_0004_0004_0004, 0, 0,
        0x0004_0004_0004_0004, 0x0004_0004_0004_0004, 0, 0,
    );
    _mm512_and_si512(_mm512_srlv_epi16(z, shifts), _mm512_set1_epi8(0x0F))
}

/// `[v[0]; 8 lanes, v[1]; 8 lanes]`: the scales of a pair of blocks, one per 8 i32 sums.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn spread2(v: __m128) -> __m512 {
    let idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(v))
}

/// Horizontal sums of an `A` x `R` grid of accumulators.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn reduce<const R: usize, const A: usize>(acc: [[__m512; R]; A]) -> [[f32; R]; A] {
    let mut out = [[0f32; R]; A];
    for k in 0..A {
        for r in 0..R {
            out[k][r] = _mm512_reduce_add_ps(acc[k][r]);
        }
    }
    out
}

/// `vpermw` index vector spreading `group`-lane groups: lane `l` takes source lane
/// `base + l / group` (used to broadcast one scale per sub-block).
const fn spread(base: i16, group: i16) -> [i16; 32] {
    let mut idx = [0i16; 32];
    let mut l = 0;
    while l < 32 {
        idx[l] = base + l as i16 / group;
        l += 1;
    }
    idx
}

/// Q4_K: 32 lanes per sub-block scale; Q6_K: 8 lanes per 16-element group scale.
static Q4K_IDX: [[i16; 32]; 4] = [spread(0, 16), spread(2, 16), spread(4, 16), spread(6, 16)];
static Q6K_IDX: [[i16; 32]; 4] = [spread(0, 8), spread(4, 8), spread(8, 8), spread(12, 8)];

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn ld_idx(idx: &[i16; 32]) -> __m512i {
    _mm512_loadu_si512(idx.as_ptr().cast())
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dpbusd_vnni(acc: __m512i, u: __m512i, s: __m512i) -> __m512i {
    _mm512_dpbusd_epi32(acc, u, s)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dpwssd_vnni(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    _mm512_dpwssd_epi32(acc, a, b)
}

/// `vpdpbusd` without VNNI. maddubs saturates i16 pairs, which the callers' ranges rule out.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dpbusd_bw(acc: __m512i, u: __m512i, s: __m512i) -> __m512i {
    let p = _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1));
    _mm512_add_epi32(acc, p)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dpwssd_bw(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    _mm512_add_epi32(acc, _mm512_madd_epi16(a, b))
}

// ---------------------------------------------------------------- integer dots

/// Each kernel has one body, generic over `R` weight rows x `A` activation rows that advance
/// together block by block: weight unpacking is shared by the `A` activation rows, activation
/// loads and offset corrections by the `R` weight rows. Results are `out[a][r]`.
macro_rules! int_kernels {
    ($feat:literal, $dpbusd:ident, $dpwssd:ident) => {
        use super::*;

        /// Q4_0 x Q8_0, pairs of blocks per step; an odd last block goes to the AVX2 kernel.
        #[inline]
        #[target_feature(enable = $feat)]
        pub unsafe fn q4_0<const R: usize, const A: usize>(
            n: usize,
            w: [*const u8; R],
            a: [*const u8; A],
        ) -> [[f32; R]; A] {
            let nb = n / QK;
            let (zero, eights) = (_mm512_setzero_si512(), _mm512_set1_epi8(8));
            let mut acc = [[_mm512_setzero_ps(); R]; A];
            let (mut y, mut ncorr, mut ad) = ([zero; A], [zero; A], [_mm512_setzero_ps(); A]);
            for i in (0..nb & !1).step_by(2) {
                for k in 0..A {
                    let a0 = a[k].add(i * Q8_0_BYTES);
                    y[k] = two256(a0.add(2), a0.add(Q8_0_BYTES + 2));
                    // -8 * sum(y), the -8 offset, as the starting value of the sums.
                    ncorr[k] = _mm512_sub_epi32(zero, $dpbusd(zero, eights, y[k]));
                    ad[k] = spread2(f16_pair(a0, a0.add(Q8_0_BYTES)));
                }
                for r in 0..R {
                    let w0 = w[r].add(i * Q4_0_BYTES);
                    let u = nibbles_2blocks(w0.add(2), w0.add(Q4_0_BYTES + 2));
                    let wd = spread2(f16_pair(w0, w0.add(Q4_0_BYTES)));
                    for k in 0..A {
                        let s = $dpbusd(ncorr[k], u, y[k]);
                        let d = _mm512_mul_ps(wd, ad[k]);
                        acc[k][r] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc[k][r]);
                    }
                }
            }
            let mut out = reduce(acc);
            if nb % 2 == 1 {
                for k in 0..A {
                    for r in 0..R {
                        out[k][r] += avx2::q4_0_blocks(w[r], a[k], nb - 1, nb);
                    }
                }
            }
            out
        }

        /// Q4_1 x Q8_1: `d_w d_a sum(q_w q_a) + m_w s_a` per block.
        #[inline]
        #[target_feature(enable = $feat)]
        pub unsafe fn q4_1<const R: usize, const A: usize>(
            n: usize,
            w: [*const u8; R],
            a: [*const u8; A],
        ) -> [[f32; R]; A] {
            let nb = n / QK;
            let zero = _mm512_setzero_si512();
            let mut acc = [[_mm512_setzero_ps(); R]; A];
            let mut msum = [[_mm_setzero_ps(); R]; A];
            let (mut y, mut ad, mut as_) =
                ([zero; A], [_mm_setzero_ps(); A], [_mm_setzero_ps(); A]);
            for i in (0..nb & !1).step_by(2) {
                for k in 0..A {
                    let a0 = a[k].add(i * Q8_1_BYTES);
                    y[k] = two256(a0.add(4), a0.add(Q8_1_BYTES + 4));
                    ad[k] = f16_pair(a0, a0.add(Q8_1_BYTES));
                    as_[k] = f16_pair(a0.add(2), a0.add(Q8_1_BYTES + 2));
                }
                for r in 0..R {
                    let w0 = w[r].add(i * Q4_1_BYTES);
                    let u = nibbles_2blocks(w0.add(4), w0.add(Q4_1_BYTES + 4));
                    let wd = f16_pair(w0, w0.add(Q4_1_BYTES));
                    let wm = f16_pair(w0.add(2), w0.add(Q4_1_BYTES + 2));
                    for k in 0..A {
                        let s = $dpbusd(zero, u, y[k]);
                        let d = spread2(_mm_mul_ps(wd, ad[k]));
                        acc[k][r] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc[k][r]);
                        msum[k][r] = _mm_fmadd_ps(wm, as_[k], msum[k][r]); // lanes 0, 1
                    }
                }
            }
            let mut out = reduce(acc);
            for k in 0..A {
                for r in 0..R {
                    let m = msum[k][r];
                    out[k][r] += _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)));
                    if nb % 2 == 1 {
                        out[k][r] += avx2::q4_1_blocks(w[r], a[k], nb - 1, nb);
                    }
                }
            }
            out
        }

        /// Q5_0 x Q8_0: the fifth bits are a byte mask straight from `qh`.
        #[inline]
        #[target_feature(enable = $feat)]
        pub unsafe fn q5_0<const R: usize, const A: usize>(
            n: usize,
            w: [*const u8; R],
            a: [*const u8; A],
        ) -> [[f32; R]; A] {
            let nb = n / QK;
            let (zero, sixteens) = (_mm512_setzero_si512(), _mm512_set1_epi8(16));
            let mut acc = [[_mm512_setzero_ps(); R]; A];
            let (mut y, mut ncorr, mut ad) = ([zero; A], [zero; A], [_mm512_setzero_ps(); A]);
            for i in (0..nb & !1).step_by(2) {
                for k in 0..A {
                    let a0 = a[k].add(i * Q8_0_BYTES);
                    y[k] = two256(a0.add(2), a0.add(Q8_0_BYTES + 2));
                    // -16 * sum(y), the -16 offset, as the starting value of the sums.
                    ncorr[k] = _mm512_sub_epi32(zero, $dpbusd(zero, sixteens, y[k]));
                    ad[k] = spread2(f16_pair(a0, a0.add(Q8_0_BYTES)));
                }
                for r in 0..R {
                    let w0 = w[r].add(i * Q5_0_BYTES);
                    // Bit i of the two qh words is the fifth bit of byte i of `u`.
                    let qh0 = read_unaligned(w0.add(2).cast::<u32>()) as u64;
                    let qh1 = read_unaligned(w0.add(Q5_0_BYTES + 2).cast::<u32>()) as u64;
                    let u = nibbles_2blocks(w0.add(6), w0.add(Q5_0_BYTES + 6));
                    let u = _mm512_mask_add_epi8(u, qh0 | qh1 << 32, u, sixteens);
                    let wd = spread2(f16_pair(w0, w0.add(Q5_0_BYTES)));
                    for k in 0..A {
                        let s = $dpbusd(ncorr[k], u, y[k]);
                        let d = _mm512_mul_ps(wd, ad[k]);
                        acc[k][r] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc[k][r]);
                    }
                }
            }
            let mut out = reduce(acc);
            if nb % 2 == 1 {
                for k in 0..A {
                    for r in 0..R {
                        out[k][r] += avx2::q5_0_blocks(w[r], a[k], nb - 1, nb);
                    }
                }
            }
            out
        }

        /// Q8_0 x Q8_0: |x| times y with x's sign (a masked negate: no 512-bit `vpsignb`).
        #[inline]
        #[target_feature(enable = $feat)]
        pub unsafe fn q8_0<const R: usize, const A: usize>(
            n: usize,
            w: [*const u8; R],
            a: [*const u8; A],
        ) -> [[f32; R]; A] {
            let nb = n / QK;
            let zero = _mm512_setzero_si512();
            let mut acc = [[_mm512_setzero_ps(); R]; A];
            let (mut y, mut ad) = ([zero; A], [_mm512_setzero_ps(); A]);
            for i in (0..nb & !1).step_by(2) {
                for k in 0..A {
                    let a0 = a[k].add(i * Q8_0_BYTES);
                    y[k] = two256(a0.add(2), a0.add(Q8_0_BYTES + 2));
                    ad[k] = spread2(f16_pair(a0, a0.add(Q8_0_BYTES)));
                }
                for r in 0..R {
                    let w0 = w[r].add(i * Q8_0_BYTES);
                    let x = two256(w0.add(2), w0.add(Q8_0_BYTES + 2));
                    let (ax, neg) = (_mm512_abs_epi8(x), _mm512_movepi8_mask(x));
                    let wd = spread2(f16_pair(w0, w0.add(Q8_0_BYTES)));
                    for k in 0..A {
                        let sy = _mm512_mask_sub_epi8(y[k], neg, zero, y[k]);
                        let s = $dpbusd(zero, ax, sy);
                        let d = _mm512_mul_ps(wd, ad[k]);
                        acc[k][r] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc[k][r]);
                    }
                }
            }
            let mut out = reduce(acc);
            if nb % 2 == 1 {
                for k in 0..A {
                    for r in 0..R {
                        out[k][r] += avx2::q8_0_blocks(w[r], a[k], nb - 1, nb);
                    }
                }
            }
            out
        }

        /// Q4_K x Q8_K, 64 elements (one 32-byte `qs` chunk = two sub-blocks) per step; the
        /// sub-block scales multiply the i16 pair sums on their way into i32 lanes.
        #[inline]
        #[target_feature(enable = $feat)]
        pub unsafe fn q4_k<const R: usize, const A: usize>(
            n: usize,
            w: [*const u8; R],
            a: [*const u8; A],
        ) -> [[f32; R]; A] {
            let idx = Q4K_IDX.each_ref().map(|i| ld_idx(i));
            #[rustfmt::skip]
            let shifts = _mm512_set_epi64(0x0004_0004_0004_0004, 0x0004_0004_0004_0004,
                0x0004_0004_0004_0004, 0x0004_0004_0004_0004, 0, 0, 0, 0);
            let (zero, m4) = (_mm512_setzero_si512(), _mm512_set1_epi8(0x0F));
            let mut acc = [[_mm512_setzero_ps(); R]; A];
            let mut accm = [[_mm256_setzero_ps(); R]; A];
            let (mut sc16, mut mn, mut dd) = ([zero; R], [[0u8; 8]; R], [_mm_setzero_ps(); R]);
            let mut y = [zero; A];
            for i in 0..n / QK_K {
                for r in 0..R {
                    let wb = w[r].add(i * Q4_K_BYTES);
                    let s = std::slice::from_raw_parts(wb.add(Q4_K_OFF_SCALES), 12);
                    let sc;
                    (sc, mn[r]) = q4k_scales_mins(s);
                    let s16 = _mm_cvtepu8_epi16(_mm_loadl_epi64(sc.as_ptr().cast()));
                    sc16[r] = _mm512_zextsi128_si512(s16);
                    dd[r] = f16_pair(wb, wb.add(2)); // [d, dmin]
                }
                let mut sumi = [[zero; R]; A];
                for (c, idx) in idx.iter().enumerate() {
                    for k in 0..A {
                        y[k] = ld512(a[k].add(i * Q8_K_BYTES + Q8_K_OFF_QS + 64 * c));
                    }
                    for r in 0..R {
                        // [chunk, chunk] -> [low nibbles (sub-block 2c), high (2c + 1)].
                        let qs = w[r].add(i * Q4_K_BYTES + Q4_K_OFF_QS + 32 * c);
                        let q = _mm512_broadcast_i64x4(ld256(qs));
                        let u = _mm512_and_si512(_mm512_srlv_epi16(q, shifts), m4);
                        let s = _mm512_permutexvar_epi16(*idx, sc16[r]);
                        for k in 0..A {
                            let p = _mm512_maddubs_epi16(u, y[k]);
                            sumi[k][r] = $dpwssd(sumi[k][r], p, s);
                        }
                    }
                }
                for k in 0..A {
                    let ab = a[k].add(i * Q8_K_BYTES);
                    let yd = _mm_set1_ps(f32_at(ab));
                    for r in 0..R {
                        let d = _mm_mul_ps(dd[r], yd);
                        let dq = _mm512_broadcastss_ps(d);
                        acc[k][r] = _mm512_fmadd_ps(dq, _mm512_cvtepi32_ps(sumi[k][r]), acc[k][r]);
                        let mins = avx2::q4k_min_terms(&mn[r], ab.add(Q8_K_OFF_BSUMS));
                        let dm = _mm256_broadcastss_ps(_mm_movehdup_ps(d));
                        accm[k][r] = _mm256_fmadd_ps(dm, _mm256_cvtepi32_ps(mins), accm[k][r]);
                    }
                }
            }
            let mut out = [[0f32; R]; A];
            for k in 0..A {
                for r in 0..R {
                    out[k][r] = _mm512_reduce_add_ps(acc[k][r]) - avx2::hsum_ps(accm[k][r]);
                }
            }
            out
        }

        /// Q6_K x Q8_K, one 128-element half (64 B of ql, 32 B of qh) as two 64-element
        /// vectors per step.
        #[inline]
        #[target_feature(enable = $feat)]
        pub unsafe fn q6_k<const R: usize, const A: usize>(
            n: usize,
            w: [*const u8; R],
            a: [*const u8; A],
        ) -> [[f32; R]; A] {
            let idx = Q6K_IDX.each_ref().map(|i| ld_idx(i));
            let (zero, m4, m30) = (
                _mm512_setzero_si512(),
                _mm512_set1_epi8(0x0F),
                _mm512_set1_epi8(0x30),
            );
            let mut acc = [[_mm512_setzero_ps(); R]; A];
            let (mut ylo, mut yhi) = ([zero; A], [zero; A]);
            for i in 0..n / QK_K {
                let mut sumi = [[zero; R]; A];
                for h in 0..2 {
                    for k in 0..A {
                        let y = a[k].add(i * Q8_K_BYTES + Q8_K_OFF_QS + 128 * h);
                        (ylo[k], yhi[k]) = (ld512(y), ld512(y.add(64)));
                    }
                    for r in 0..R {
                        let wp = w[r].add(i * Q6_K_BYTES);
                        let sc =
                            _mm256_cvtepi8_epi16(_mm_loadu_si128(wp.add(Q6_K_OFF_SCALES).cast()));
                        let sc16 = _mm512_zextsi256_si512(sc);
                        let ql = ld512(wp.add(64 * h));
                        let qh = ld256(wp.add(Q6_K_OFF_QH + 32 * h));
                        // [qh, qh >> 2]: the top-bit pairs of elements 0-63 sit in bits 0-1
                        // and of elements 64-127 in bits 4-5; spilled bits miss the 0x30 mask.
                        let qh = _mm512_inserti64x4(
                            _mm512_castsi256_si512(qh),
                            _mm256_srli_epi16(qh, 2),
                            1,
                        );
                        let lo = _mm512_or_si512(
                            _mm512_and_si512(ql, m4),
                            _mm512_and_si512(_mm512_slli_epi16(qh, 4), m30),
                        );
                        let hi = _mm512_or_si512(
                            _mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                            _mm512_and_si512(qh, m30),
                        );
                        let slo = _mm512_permutexvar_epi16(idx[2 * h], sc16);
                        let shi = _mm512_permutexvar_epi16(idx[2 * h + 1], sc16);
                        for k in 0..A {
                            let plo = _mm512_maddubs_epi16(lo, ylo[k]);
                            let phi = _mm512_maddubs_epi16(hi, yhi[k]);
                            sumi[k][r] = $dpwssd($dpwssd(sumi[k][r], plo, slo), phi, shi);
                        }
                    }
                }
                for k in 0..A {
                    let ab = a[k].add(i * Q8_K_BYTES);
                    let yd = f32_at(ab);
                    for r in 0..R {
                        let wp = w[r].add(i * Q6_K_BYTES);
                        let off =
                            avx2::q6k_offset_terms(wp.add(Q6_K_OFF_SCALES), ab.add(Q8_K_OFF_BSUMS));
                        let s = _mm512_sub_epi32(sumi[k][r], _mm512_zextsi256_si512(off));
                        let d = _mm512_set1_ps(f16_at(wp.add(Q6_K_OFF_D)) * yd);
                        acc[k][r] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc[k][r]);
                    }
                }
            }
            reduce(acc)
        }

        entry_points!($feat, dot_q4_0, rows_q4_0, tile_q4_0, q4_0);
        entry_points!($feat, dot_q4_1, rows_q4_1, tile_q4_1, q4_1);
        entry_points!($feat, dot_q5_0, rows_q5_0, tile_q5_0, q5_0);
        entry_points!($feat, dot_q8_0, rows_q8_0, tile_q8_0, q8_0);
        entry_points!($feat, dot_q4_k, rows_q4_k, tile_q4_k, q4_k);
        entry_points!($feat, dot_q6_k, rows_q6_k, tile_q6_k, q6_k);
    };
}

/// The dispatch-table entry points of a generic kernel `$k`: one dot, `ROWS_R` rows against
/// one activation row (decode), and a `TILE_R` x `TILE_A` tile (prefill).
macro_rules! entry_points {
    ($feat:literal, $dot:ident, $rows:ident, $tile:ident, $k:ident) => {
        #[target_feature(enable = $feat)]
        pub unsafe fn $dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
            $k::<1, 1>(n, [w.as_ptr()], [a.as_ptr()])[0][0]
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn $rows(n: usize, w: [*const u8; ROWS_R], a: *const u8) -> [f32; ROWS_R] {
            $k::<ROWS_R, 1>(n, w, [a])[0]
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn $tile(n: usize, w: [*const u8; TILE_R], a: [*const u8; TILE_A]) -> Tile {
            $k::<TILE_R, TILE_A>(n, w, a)
        }
    };
}

pub mod vnni {
    int_kernels!(
        "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
        dpbusd_vnni,
        dpwssd_vnni
    );
}

pub mod bw {
    int_kernels!(
        "avx512f,avx512bw,avx512vl,avx2,fma,f16c",
        dpbusd_bw,
        dpwssd_bw
    );
}

// ---------------------------------------------------------------- float dots

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (w.as_ptr().cast::<f32>(), a.as_ptr().cast::<f32>());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            let (x, y) = (
                _mm512_loadu_ps(w.add(i + 16 * k)),
                _mm512_loadu_ps(a.add(i + 16 * k)),
            );
            *acc = _mm512_fmadd_ps(x, y, *acc);
        }
        i += 64;
    }
    while i + 16 <= n {
        acc[0] = _mm512_fmadd_ps(_mm512_loadu_ps(w.add(i)), _mm512_loadu_ps(a.add(i)), acc[0]);
        i += 16;
    }
    let acc = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    let mut s = _mm512_reduce_add_ps(acc);
    while i < n {
        s += read_unaligned(w.add(i)) * read_unaligned(a.add(i));
        i += 1;
    }
    s
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (w.as_ptr(), a.as_ptr());
    let ld = |p: *const u8, i: usize| _mm512_cvtph_ps(_mm256_loadu_si256(p.add(2 * i).cast()));
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            *acc = _mm512_fmadd_ps(ld(w, i + 16 * k), ld(a, i + 16 * k), *acc);
        }
        i += 64;
    }
    while i + 16 <= n {
        acc[0] = _mm512_fmadd_ps(ld(w, i), ld(a, i), acc[0]);
        i += 16;
    }
    let acc = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    let mut s = _mm512_reduce_add_ps(acc);
    while i < n {
        s += f16_at(w.add(2 * i)) * f16_at(a.add(2 * i));
        i += 1;
    }
    s
}

// ---------------------------------------------------------------- activation quantisers

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn quantize_f16(x: &[f32], dst: &mut [u8]) {
    let mut i = 0;
    while i + 16 <= x.len() {
        let v = _mm512_loadu_ps(x.as_ptr().add(i));
        let h = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
        _mm256_storeu_si256(dst.as_mut_ptr().add(2 * i).cast(), h);
        i += 16;
    }
    super::scalar::quantize_f16(&x[i..], &mut dst[2 * i..]);
}

/// `v * s` rounded half to even, as i32 (independent of MXCSR).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn round_mul(v: __m512, s: __m512) -> __m512i {
    _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
        v, s,
    ))
}

/// Q8_0/Q8_1 as llama.cpp's x86 path (and our AVX2 one): d = amax / 127,
/// q = round-half-even(x * (127 / amax)).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn quantize_q8_01<const SUM: bool>(x: &[f32], dst: &mut [u8]) {
    let (bytes, hdr) = if SUM {
        (Q8_1_BYTES, 4)
    } else {
        (Q8_0_BYTES, 2)
    };
    for (i, b) in dst.chunks_exact_mut(bytes).take(x.len() / QK).enumerate() {
        let v0 = _mm512_loadu_ps(x.as_ptr().add(i * QK));
        let v1 = _mm512_loadu_ps(x.as_ptr().add(i * QK + 16));
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        let d = amax / 127.0;
        let id = _mm512_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
        let (q0, q1) = (round_mul(v0, id), round_mul(v1, id));
        let out = b.as_mut_ptr().add(hdr);
        _mm_storeu_si128(out.cast(), _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128(out.add(16).cast(), _mm512_cvtepi32_epi8(q1));
        write_f16(b, 0, d);
        if SUM {
            write_f16(
                b,
                2,
                d * _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1)) as f32,
            );
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn quantize_q8_0(x: &[f32], dst: &mut [u8]) {
    quantize_q8_01::<false>(x, dst)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn quantize_q8_1(x: &[f32], dst: &mut [u8]) {
    quantize_q8_01::<true>(x, dst)
}

/// Q8_K, bit-identical to the scalar reference. One 16-float vector is one `bsums` group.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn quantize_q8_k(x: &[f32], dst: &mut [u8]) {
    for (xb, b) in x.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Q8_K_BYTES)) {
        let xp = xb.as_ptr();
        let mut m = _mm512_setzero_ps();
        for g in 0..16 {
            m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(xp.add(16 * g))));
        }
        let amax = _mm512_reduce_max_ps(m);
        if amax == 0.0 {
            b.fill(0);
            continue;
        }
        // The reference takes the sign of the first element reaching amax.
        let target = _mm512_set1_ps(amax);
        let first = (0..16)
            .find_map(|g| {
                let v = _mm512_abs_ps(_mm512_loadu_ps(xp.add(16 * g)));
                let k = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(v, target);
                (k != 0).then(|| 16 * g + k.trailing_zeros() as usize)
            })
            .unwrap_or(0);
        let iscale = -127.0 / xb[first];
        let (s, cap) = (_mm512_set1_ps(iscale), _mm512_set1_epi32(127));
        for g in 0..16 {
            let q = _mm512_min_epi32(round_mul(_mm512_loadu_ps(xp.add(16 * g)), s), cap);
            let out = b.as_mut_ptr().add(Q8_K_OFF_QS + 16 * g);
            _mm_storeu_si128(out.cast(), _mm512_cvtepi32_epi8(q));
            let o = Q8_K_OFF_BSUMS + 2 * g;
            b[o..o + 2].copy_from_slice(&(_mm512_reduce_add_epi32(q) as i16).to_le_bytes());
        }
        b[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}
