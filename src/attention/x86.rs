//! The AVX-512 kernels: decode chunks (split-K) and the prefill tile, keys and values
//! read as stored (f16 or f32) and converted in registers.

#![allow(clippy::needless_range_loop)] // register tiles read best as indexed loops

use crate::kv_cache::{HeadView, RowsRef};
use crate::model::ops::exp_fast;
use std::arch::x86_64::*;

use super::decode::MAX_HD;
use super::prefill::{Tile, K_BLOCK};

pub use crate::cpu::{avx2 as has_avx2, avx512 as has_avx512};

/// Whether the AVX-512 decode kernels handle this head size on this CPU.
pub fn usable(hd: usize) -> bool {
    has_avx512() && hd.is_multiple_of(16) && hd > 0 && hd <= MAX_HD
}

/// Loads 16 elements of a row buffer as f32.
trait Load: Copy {
    unsafe fn load(p: *const Self) -> __m512;
}
impl Load for half::f16 {
    #[inline(always)]
    unsafe fn load(p: *const Self) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
    }
}
impl Load for f32 {
    #[inline(always)]
    unsafe fn load(p: *const Self) -> __m512 {
        _mm512_loadu_ps(p)
    }
}

/// One decode task: slots `j0..j1` of `head` for the `group` scaled queries `q`
/// (`[group, hd]`). Writes `exp(score - local max)` into columns `j0..j1` of the rows
/// `probs + g * stride`, and `part[g] = (local max, local sum, sum_j p_j v_j)`.
///
/// # Safety
/// `usable(hd)`; `probs` rows hold `stride >= j1` floats; `j1 <= head.len()`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn decode_chunk(
    head: HeadView,
    q: &[f32],
    group: usize,
    j0: usize,
    j1: usize,
    probs: *mut f32,
    stride: usize,
    part: &mut [f32],
) {
    match (head.keys, head.values) {
        (RowsRef::F16(k), RowsRef::F16(v)) => chunk::<half::f16>(
            k.as_ptr(),
            v.as_ptr(),
            head.head_dim,
            q,
            group,
            j0,
            j1,
            probs,
            stride,
            part,
        ),
        (RowsRef::F32(k), RowsRef::F32(v)) => chunk::<f32>(
            k.as_ptr(),
            v.as_ptr(),
            head.head_dim,
            q,
            group,
            j0,
            j1,
            probs,
            stride,
            part,
        ),
        _ => unreachable!("keys and values share a dtype"),
    }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn chunk<T: Load>(
    k: *const T,
    v: *const T,
    hd: usize,
    q: &[f32],
    group: usize,
    j0: usize,
    j1: usize,
    probs: *mut f32,
    stride: usize,
    part: &mut [f32],
) {
    let nc = hd / 16;
    // Scores, 16 keys at a time: the keys are converted once into `kb`, then each query
    // head takes 16 dot products whose sums one transposing reduction gathers.
    let mut kb = [0f32; 16 * MAX_HD];
    let mut j = j0;
    while j < j1 {
        let nk = (j1 - j).min(16);
        for r in 0..16 {
            let src = k.add((j + r.min(nk - 1)) * hd);
            for c in 0..nc {
                _mm512_storeu_ps(
                    kb.as_mut_ptr().add(r * hd + 16 * c),
                    T::load(src.add(16 * c)),
                );
            }
        }
        let mask: __mmask16 = if nk == 16 { 0xFFFF } else { (1u16 << nk) - 1 };
        for g in 0..group {
            let qg = q.as_ptr().add(g * hd);
            let mut acc = [_mm512_setzero_ps(); 16];
            for c in 0..nc {
                let qc = _mm512_loadu_ps(qg.add(16 * c));
                for (r, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(qc, _mm512_loadu_ps(kb.as_ptr().add(r * hd + 16 * c)), *a);
                }
            }
            let sums = hsum16(acc);
            _mm512_mask_storeu_ps(probs.add(g * stride + j), mask, sums);
        }
        j += nk;
    }
    // Local softmax per query head.
    let n = j1 - j0;
    for g in 0..group {
        let (m, sum) = exp_row(probs.add(g * stride + j0), n);
        part[g * (2 + hd)] = m;
        part[g * (2 + hd) + 1] = sum as f32;
    }
    // Values: up to four query heads per pass over the chunk.
    let mut g0 = 0;
    while g0 < group {
        let gs = (group - g0).min(4);
        let p = probs.add(g0 * stride);
        let o = &mut part[g0 * (2 + hd)..];
        match (nc, gs) {
            (4, 1) => pv::<T, 4, 1>(v, j0, j1, p, stride, o),
            (4, 2) => pv::<T, 4, 2>(v, j0, j1, p, stride, o),
            (4, 3) => pv::<T, 4, 3>(v, j0, j1, p, stride, o),
            (4, 4) => pv::<T, 4, 4>(v, j0, j1, p, stride, o),
            (8, 1) => pv::<T, 8, 1>(v, j0, j1, p, stride, o),
            (8, 2) => pv::<T, 8, 2>(v, j0, j1, p, stride, o),
            (8, 3) => pv::<T, 8, 3>(v, j0, j1, p, stride, o),
            (8, 4) => pv::<T, 8, 4>(v, j0, j1, p, stride, o),
            _ => pv_any(v, hd, j0, j1, p, stride, gs, o),
        }
        g0 += gs;
    }
}

/// `o[g] = sum_j p[g][j] v_j` for `G` query heads, head_dim `16 * NC`; `o` rows are
/// `2 + hd` apart with the sums at offset 2.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn pv<T: Load, const NC: usize, const G: usize>(
    v: *const T,
    j0: usize,
    j1: usize,
    p: *const f32,
    stride: usize,
    o: &mut [f32],
) {
    let hd = 16 * NC;
    let mut acc = [[_mm512_setzero_ps(); NC]; G];
    for j in j0..j1 {
        let vr = v.add(j * hd);
        let vv: [__m512; NC] = std::array::from_fn(|c| T::load(vr.add(16 * c)));
        for (g, a) in acc.iter_mut().enumerate() {
            let pg = _mm512_set1_ps(*p.add(g * stride + j));
            for c in 0..NC {
                a[c] = _mm512_fmadd_ps(pg, vv[c], a[c]);
            }
        }
    }
    for (g, a) in acc.iter().enumerate() {
        for (c, x) in a.iter().enumerate() {
            _mm512_storeu_ps(o.as_mut_ptr().add(g * (2 + hd) + 2 + 16 * c), *x);
        }
    }
}

/// [`pv`] for any head_dim that is a multiple of 16, one query head at a time.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn pv_any<T: Load>(
    v: *const T,
    hd: usize,
    j0: usize,
    j1: usize,
    p: *const f32,
    stride: usize,
    gs: usize,
    o: &mut [f32],
) {
    for g in 0..gs {
        let out = o.as_mut_ptr().add(g * (2 + hd) + 2);
        for c in 0..hd / 16 {
            let mut a = _mm512_setzero_ps();
            for j in j0..j1 {
                let pg = _mm512_set1_ps(*p.add(g * stride + j));
                a = _mm512_fmadd_ps(pg, T::load(v.add(j * hd + 16 * c)), a);
            }
            _mm512_storeu_ps(out.add(16 * c), a);
        }
    }
}

/// `e^x` for 16 lanes, as [`crate::model::ops::exp_fast`] (whose `n`, the nearest integer,
/// is `floor(t + 1/2)` here: the same but at exact ties, within its 2 ulp either way).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(super) unsafe fn exp16(x: __m512) -> __m512 {
    let x = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-87.0)),
        _mm512_set1_ps(88.0),
    );
    let t = _mm512_add_ps(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        _mm512_set1_ps(0.5),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(t);
    let r = _mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(0.693_145_75)));
    let r = _mm512_sub_ps(r, _mm512_mul_ps(n, _mm512_set1_ps(1.428_606_8e-6)));
    let mut p = _mm512_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}

/// `acc + x` with the 16 floats of `x` widened to f64 and folded onto 8 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn add_pd16(acc: __m512d, x: __m512) -> __m512d {
    let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
    let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
        _mm512_castps_pd(x),
    )));
    _mm512_add_pd(acc, _mm512_add_pd(lo, hi))
}

/// `x = exp(x - max x)` over `n` floats at `p`; returns (max, sum of the new values).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn exp_row(p: *mut f32, n: usize) -> (f32, f64) {
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let tail = (n % 16) as u32;
    let tmask: __mmask16 = ((1u32 << tail) - 1) as __mmask16;
    let full = n - n % 16;
    let mut mx = ninf;
    for i in (0..full).step_by(16) {
        mx = _mm512_max_ps(mx, _mm512_loadu_ps(p.add(i)));
    }
    if tail > 0 {
        mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(ninf, tmask, p.add(full)));
    }
    let m = _mm512_reduce_max_ps(mx);
    let mv = _mm512_set1_ps(m);
    // The sum in f64, as the reference softmax (`ops::softmax`) takes it.
    let mut sum = _mm512_setzero_pd();
    for i in (0..full).step_by(16) {
        let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(p.add(i)), mv));
        sum = add_pd16(sum, e);
        _mm512_storeu_ps(p.add(i), e);
    }
    if tail > 0 {
        let x = _mm512_maskz_loadu_ps(tmask, p.add(full));
        let e = _mm512_maskz_mov_ps(tmask, exp16(_mm512_sub_ps(x, mv)));
        sum = add_pd16(sum, e);
        _mm512_mask_storeu_ps(p.add(full), tmask, e);
    }
    (m, _mm512_reduce_add_pd(sum))
}

/// One key block of a prefill tile for four query vectors `si` (indices into the tile's
/// queries and state), vector `k` seeing the block's first `lims[k]` keys (0: skip).
/// Online softmax: the running max, sum and output of each vector are rescaled.
///
/// # Safety
/// AVX-512 CPU; `tile.hd` is a multiple of 16; the block is loaded.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(super) unsafe fn attend_block4(
    tile: &mut Tile,
    si: [usize; 4],
    lims: [usize; 4],
    pbuf: &mut [[f32; K_BLOCK]; 4],
) {
    const KB: usize = K_BLOCK;
    const NV: usize = KB / 16;
    let hd = tile.hd;
    let kt = tile.kt.as_ptr();
    let q: [*const f32; 4] = std::array::from_fn(|k| tile.q.as_ptr().add(si[k] * hd));
    // Scores: s[k] = q_k . key_j for the block's keys, 4 x 64 in registers.
    let mut acc = [[_mm512_setzero_ps(); NV]; 4];
    for d in 0..hd {
        let kr: [__m512; NV] = std::array::from_fn(|c| _mm512_loadu_ps(kt.add(d * KB + 16 * c)));
        for k in 0..4 {
            let b = _mm512_set1_ps(*q[k].add(d));
            for c in 0..NV {
                acc[k][c] = _mm512_fmadd_ps(b, kr[c], acc[k][c]);
            }
        }
    }
    // Online softmax per vector; probabilities of masked keys are 0.
    let mut f = [1f32; 4];
    for k in 0..4 {
        let lim = lims[k];
        if lim == 0 {
            pbuf[k] = [0.0; KB];
            continue;
        }
        let masks: [__mmask16; NV] = std::array::from_fn(|c| {
            let n = lim.saturating_sub(16 * c).min(16);
            if n == 16 {
                0xFFFF
            } else {
                ((1u32 << n) - 1) as __mmask16
            }
        });
        let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut mx = ninf;
        for c in 0..NV {
            mx = _mm512_max_ps(mx, _mm512_mask_blend_ps(masks[c], ninf, acc[k][c]));
        }
        let bmax = _mm512_reduce_max_ps(mx);
        let m_old = tile.m[si[k]];
        let m_new = m_old.max(bmax);
        f[k] = exp_fast(m_old - m_new);
        let mn = _mm512_set1_ps(m_new);
        let mut sum = _mm512_setzero_pd();
        for c in 0..NV {
            let p = _mm512_maskz_mov_ps(masks[c], exp16(_mm512_sub_ps(acc[k][c], mn)));
            sum = add_pd16(sum, p);
            _mm512_storeu_ps(pbuf[k].as_mut_ptr().add(16 * c), p);
        }
        tile.m[si[k]] = m_new;
        tile.l[si[k]] = tile.l[si[k]] * f[k] as f64 + _mm512_reduce_add_pd(sum);
    }
    // Outputs: o_k = o_k f_k + sum_j p_kj v_j, 64 dimensions per pass.
    let jmax = lims.iter().copied().max().unwrap_or(0);
    let v = tile.v.as_ptr();
    let mut d0 = 0;
    while d0 < hd {
        match (hd - d0) / 16 {
            1 => pv_block::<1>(tile, v, hd, d0, jmax, &si, &f, pbuf),
            2 => pv_block::<2>(tile, v, hd, d0, jmax, &si, &f, pbuf),
            3 => pv_block::<3>(tile, v, hd, d0, jmax, &si, &f, pbuf),
            _ => pv_block::<4>(tile, v, hd, d0, jmax, &si, &f, pbuf),
        }
        d0 += 64;
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn pv_block<const NC: usize>(
    tile: &mut Tile,
    v: *const f32,
    hd: usize,
    d0: usize,
    jmax: usize,
    si: &[usize; 4],
    f: &[f32; 4],
    pbuf: &[[f32; K_BLOCK]; 4],
) {
    let mut acc = [[_mm512_setzero_ps(); NC]; 4];
    for j in 0..jmax {
        let vr: [__m512; NC] =
            std::array::from_fn(|c| _mm512_loadu_ps(v.add(j * hd + d0 + 16 * c)));
        for k in 0..4 {
            let b = _mm512_set1_ps(pbuf[k][j]);
            for c in 0..NC {
                acc[k][c] = _mm512_fmadd_ps(b, vr[c], acc[k][c]);
            }
        }
    }
    // Vectors repeated as padding (same `si`) must be written once.
    for k in 0..4 {
        if si[..k].contains(&si[k]) {
            continue;
        }
        let o = tile.out.as_mut_ptr().add(si[k] * hd + d0);
        let fk = _mm512_set1_ps(f[k]);
        for c in 0..NC {
            let prev = _mm512_loadu_ps(o.add(16 * c));
            _mm512_storeu_ps(o.add(16 * c), _mm512_fmadd_ps(prev, fk, acc[k][c]));
        }
    }
}

/// `[sum(a[0]), sum(a[1]), ..., sum(a[15])]`: a transposing reduction (adds of 128-bit
/// lane shuffles, then in-lane shuffles) instead of sixteen horizontal sums.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn hsum16(a: [__m512; 16]) -> __m512 {
    // 16 -> 8: 128-bit lanes [x(L0+L2), x(L1+L3), y(L0+L2), y(L1+L3)].
    let b: [__m512; 8] = std::array::from_fn(|i| {
        let (x, y) = (a[2 * i], a[2 * i + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(x, y),
            _mm512_shuffle_f32x4::<0b11_10_11_10>(x, y),
        )
    });
    // 8 -> 4: lane L of c[i] holds four partial sums of a[4i + L].
    let c: [__m512; 4] = std::array::from_fn(|i| {
        let (x, y) = (b[2 * i], b[2 * i + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(x, y),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(x, y),
        )
    });
    // In-lane: d0 = [c0 0+2, c1 0+2, c0 1+3, c1 1+3] per lane, d1 likewise for c2, c3.
    let d0 = _mm512_add_ps(
        _mm512_unpacklo_ps(c[0], c[1]),
        _mm512_unpackhi_ps(c[0], c[1]),
    );
    let d1 = _mm512_add_ps(
        _mm512_unpacklo_ps(c[2], c[3]),
        _mm512_unpackhi_ps(c[2], c[3]),
    );
    // Element m of lane L = sum of a[4m + L].
    let e = _mm512_add_ps(
        _mm512_shuffle_ps::<0b01_00_01_00>(d0, d1),
        _mm512_shuffle_ps::<0b11_10_11_10>(d0, d1),
    );
    let idx = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    _mm512_permutexvar_ps(idx, e)
}
