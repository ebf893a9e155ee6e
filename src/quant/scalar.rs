//! Portable kernels: the reference every SIMD path is tested against, and the fallback for
//! CPUs without AVX2. Numerics follow ggml's reference C: integer sums per block, scaled once
//! per block in f32.

use super::blocks::*;
use super::GgmlType;

// ---------------------------------------------------------------- dequantisation

/// Dequantises `dst.len()` elements of type `ty` from `src`.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    let n = dst.len();
    debug_assert!(n.is_multiple_of(ty.block_len()));
    debug_assert!(src.len() >= n / ty.block_len() * ty.block_bytes());
    match ty {
        GgmlType::F32 => {
            for (y, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *y = read_f32(b, 0);
            }
        }
        GgmlType::F16 => {
            for (y, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *y = read_f16(b, 0);
            }
        }
        GgmlType::BF16 => {
            for (y, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *y = read_bf16(b, 0);
            }
        }
        GgmlType::Q4_0 => {
            for (y, b) in dst.chunks_exact_mut(QK).zip(src.chunks_exact(Q4_0_BYTES)) {
                let d = read_f16(b, 0);
                for (j, &q) in b[2..18].iter().enumerate() {
                    y[j] = d * ((q & 0xF) as i32 - 8) as f32;
                    y[j + 16] = d * ((q >> 4) as i32 - 8) as f32;
                }
            }
        }
        GgmlType::Q4_1 => {
            for (y, b) in dst.chunks_exact_mut(QK).zip(src.chunks_exact(Q4_1_BYTES)) {
                let (d, m) = (read_f16(b, 0), read_f16(b, 2));
                for (j, &q) in b[4..20].iter().enumerate() {
                    y[j] = d * (q & 0xF) as f32 + m;
                    y[j + 16] = d * (q >> 4) as f32 + m;
                }
            }
        }
        GgmlType::Q5_0 => {
            for (y, b) in dst.chunks_exact_mut(QK).zip(src.chunks_exact(Q5_0_BYTES)) {
                let d = read_f16(b, 0);
                let qh = read_u32(b, 2);
                for (j, &q) in b[6..22].iter().enumerate() {
                    let h0 = ((qh >> j) & 1) << 4;
                    let h1 = ((qh >> (j + 16)) & 1) << 4;
                    y[j] = d * (((q & 0xF) as u32 | h0) as i32 - 16) as f32;
                    y[j + 16] = d * (((q >> 4) as u32 | h1) as i32 - 16) as f32;
                }
            }
        }
        GgmlType::Q5_1 => {
            for (y, b) in dst.chunks_exact_mut(QK).zip(src.chunks_exact(Q5_1_BYTES)) {
                let (d, m) = (read_f16(b, 0), read_f16(b, 2));
                let qh = read_u32(b, 4);
                for (j, &q) in b[8..24].iter().enumerate() {
                    let h0 = ((qh >> j) & 1) << 4;
                    let h1 = ((qh >> (j + 16)) & 1) << 4;
                    y[j] = d * ((q & 0xF) as u32 | h0) as f32 + m;
                    y[j + 16] = d * ((q >> 4) as u32 | h1) as f32 + m;
                }
            }
        }
        GgmlType::IQ4_NL => {
            for (y, b) in dst.chunks_exact_mut(QK).zip(src.chunks_exact(IQ4_NL_BYTES)) {
                let d = read_f16(b, 0);
                for (j, &q) in b[2..18].iter().enumerate() {
                    y[j] = d * KVALUES_IQ4NL[(q & 0xF) as usize] as f32;
                    y[j + 16] = d * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
                }
            }
        }
        GgmlType::Q8_0 => {
            for (y, b) in dst.chunks_exact_mut(QK).zip(src.chunks_exact(Q8_0_BYTES)) {
                let d = read_f16(b, 0);
                for (y, &q) in y.iter_mut().zip(&b[2..34]) {
                    *y = d * (q as i8) as f32;
                }
            }
        }
        GgmlType::Q2_K => {
            for (y, b) in dst.chunks_exact_mut(QK_K).zip(src.chunks_exact(Q2_K_BYTES)) {
                let (d, dmin) = (read_f16(b, Q2_K_OFF_D), read_f16(b, Q2_K_OFF_DMIN));
                let mut q = [0u8; QK_K];
                q2k_unpack(b, &mut q);
                for (e, (y, &q)) in y.iter_mut().zip(&q).enumerate() {
                    let s = b[e / 16];
                    *y = d * (s & 0xF) as f32 * q as f32 - dmin * (s >> 4) as f32;
                }
            }
        }
        GgmlType::Q3_K => {
            for (y, b) in dst.chunks_exact_mut(QK_K).zip(src.chunks_exact(Q3_K_BYTES)) {
                let d = read_f16(b, Q3_K_OFF_D);
                let sc = q3k_scales(&b[Q3_K_OFF_SCALES..Q3_K_OFF_D]);
                let mut q = [0i8; QK_K];
                q3k_unpack(b, &mut q);
                for (e, (y, &q)) in y.iter_mut().zip(&q).enumerate() {
                    *y = d * sc[e / 16] as f32 * q as f32;
                }
            }
        }
        GgmlType::Q4_K => {
            for (y, b) in dst.chunks_exact_mut(QK_K).zip(src.chunks_exact(Q4_K_BYTES)) {
                let (d, dmin) = (read_f16(b, 0), read_f16(b, 2));
                let (sc, mn) = q4k_scales_mins(&b[Q4_K_OFF_SCALES..Q4_K_OFF_QS]);
                let qs = &b[Q4_K_OFF_QS..];
                for c in 0..4 {
                    let (d1, m1) = (d * sc[2 * c] as f32, dmin * mn[2 * c] as f32);
                    let (d2, m2) = (d * sc[2 * c + 1] as f32, dmin * mn[2 * c + 1] as f32);
                    for l in 0..32 {
                        let q = qs[32 * c + l];
                        y[64 * c + l] = d1 * (q & 0xF) as f32 - m1;
                        y[64 * c + 32 + l] = d2 * (q >> 4) as f32 - m2;
                    }
                }
            }
        }
        GgmlType::Q5_K => {
            for (y, b) in dst.chunks_exact_mut(QK_K).zip(src.chunks_exact(Q5_K_BYTES)) {
                let (d, dmin) = (read_f16(b, 0), read_f16(b, 2));
                let (sc, mn) = q4k_scales_mins(&b[Q5_K_OFF_SCALES..Q5_K_OFF_QH]);
                let mut q = [0u8; QK_K];
                q5k_unpack(b, &mut q);
                for (e, (y, &q)) in y.iter_mut().zip(&q).enumerate() {
                    *y = d * sc[e / 32] as f32 * q as f32 - dmin * mn[e / 32] as f32;
                }
            }
        }
        GgmlType::Q6_K => {
            for (y, b) in dst.chunks_exact_mut(QK_K).zip(src.chunks_exact(Q6_K_BYTES)) {
                let d = read_f16(b, Q6_K_OFF_D);
                let mut q = [0i8; QK_K];
                q6k_unpack(b, &mut q);
                for (e, (y, &q)) in y.iter_mut().zip(&q).enumerate() {
                    let sc = b[Q6_K_OFF_SCALES + e / 16] as i8;
                    *y = d * (sc as i32 * q as i32) as f32;
                }
            }
        }
    }
}

/// Unpacks the 256 two-bit quants (0..=3) of a Q2_K or Q3_K block's `qs` (64 bytes), in
/// element order: element `128h + 32j + l` is bits `2j..2j + 2` of `qs[32h + l]`.
fn unpack_2bit(qs: &[u8], out: &mut [u8; QK_K]) {
    for (e, q) in out.iter_mut().enumerate() {
        let (h, j, l) = (e / 128, e / 32 % 4, e % 32);
        *q = (qs[32 * h + l] >> (2 * j)) & 3;
    }
}

/// The 256 quants (0..=3) of a Q2_K block, in element order.
fn q2k_unpack(b: &[u8], out: &mut [u8; QK_K]) {
    unpack_2bit(&b[Q2_K_OFF_QS..Q2_K_OFF_D], out);
}

/// The 256 quants (-4..=3) of a Q3_K block, in element order: the two low bits, minus 4
/// where element `e`'s bit `e / 32` of `hmask[e % 32]` is clear.
fn q3k_unpack(b: &[u8], out: &mut [i8; QK_K]) {
    let mut lo = [0u8; QK_K];
    unpack_2bit(&b[Q3_K_OFF_QS..Q3_K_OFF_SCALES], &mut lo);
    for (e, (o, &lo)) in out.iter_mut().zip(&lo).enumerate() {
        let high = (b[e % 32] >> (e / 32)) & 1;
        *o = lo as i8 - if high == 1 { 0 } else { 4 };
    }
}

/// Unpacks the 256 five-bit quants (0..=31) of a Q5_K block, in element order.
fn q5k_unpack(b: &[u8], out: &mut [u8; QK_K]) {
    let qh = &b[Q5_K_OFF_QH..Q5_K_OFF_QS];
    let qs = &b[Q5_K_OFF_QS..Q5_K_BYTES];
    for c in 0..4 {
        for l in 0..32 {
            let q = qs[32 * c + l];
            out[64 * c + l] = (q & 0xF) | ((qh[l] >> (2 * c)) & 1) << 4;
            out[64 * c + 32 + l] = (q >> 4) | ((qh[l] >> (2 * c + 1)) & 1) << 4;
        }
    }
}

/// Unpacks the 256 six-bit quants of a Q6_K block into `q - 32` (range -32..=31).
fn q6k_unpack(b: &[u8], out: &mut [i8; QK_K]) {
    for h in 0..2 {
        let ql = &b[64 * h..64 * h + 64];
        let qh = &b[Q6_K_OFF_QH + 32 * h..Q6_K_OFF_QH + 32 * h + 32];
        let o = &mut out[128 * h..128 * h + 128];
        for l in 0..32 {
            let hb = qh[l];
            o[l] = ((ql[l] & 0xF) | ((hb & 3) << 4)) as i8 - 32;
            o[l + 32] = ((ql[l + 32] & 0xF) | (((hb >> 2) & 3) << 4)) as i8 - 32;
            o[l + 64] = ((ql[l] >> 4) | (((hb >> 4) & 3) << 4)) as i8 - 32;
            o[l + 96] = ((ql[l + 32] >> 4) | (((hb >> 6) & 3) << 4)) as i8 - 32;
        }
    }
}

// ---------------------------------------------------------------- activation quantisation

/// Quantises activations into the format `ty`'s dot product takes.
pub fn quantize_acts(ty: GgmlType, x: &[f32], dst: &mut [u8]) {
    debug_assert_eq!(dst.len(), ty.act_row_bytes(x.len()));
    match ty {
        GgmlType::F32 | GgmlType::BF16 => quantize_f32(x, dst),
        GgmlType::F16 => quantize_f16(x, dst),
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL => {
            quantize_q8_0(x, dst)
        }
        GgmlType::Q4_1 | GgmlType::Q5_1 => quantize_q8_1(x, dst),
        GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => {
            quantize_q8_k(x, dst)
        }
    }
}

pub fn quantize_f32(x: &[f32], dst: &mut [u8]) {
    for (b, v) in dst.chunks_exact_mut(4).zip(x) {
        b.copy_from_slice(&v.to_le_bytes());
    }
}

pub fn quantize_f16(x: &[f32], dst: &mut [u8]) {
    for (b, &v) in dst.chunks_exact_mut(2).zip(x) {
        write_f16(b, 0, v);
    }
}

/// Q8_0 as ggml's reference: d = amax / 127, q = round-half-away(x / d).
pub fn quantize_q8_0(x: &[f32], dst: &mut [u8]) {
    for (x, b) in x.chunks_exact(QK).zip(dst.chunks_exact_mut(Q8_0_BYTES)) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(b, 0, d);
        for (q, &v) in b[2..].iter_mut().zip(x) {
            *q = (v * id).round() as i8 as u8;
        }
    }
}

/// Q8_1 as ggml's reference: Q8_0 plus s = d * sum(q), with the unrounded f32 d.
pub fn quantize_q8_1(x: &[f32], dst: &mut [u8]) {
    for (x, b) in x.chunks_exact(QK).zip(dst.chunks_exact_mut(Q8_1_BYTES)) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in b[4..].iter_mut().zip(x) {
            let qi = (v * id).round() as i8;
            sum += qi as i32;
            *q = qi as u8;
        }
        write_f16(b, 0, d);
        write_f16(b, 2, sum as f32 * d);
    }
}

/// Q8_K as ggml's reference: the scale comes from the signed value of largest magnitude
/// (first one on ties), iscale = -127 / max, q = round-half-even(iscale * x) clamped to 127,
/// d = 1 / iscale (negative when max > 0).
pub fn quantize_q8_k(x: &[f32], dst: &mut [u8]) {
    for (x, b) in x.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Q8_K_BYTES)) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            b.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        let qs = &mut b[Q8_K_OFF_QS..Q8_K_OFF_BSUMS];
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = ((iscale * v).round_ties_even() as i32).min(127) as i8 as u8;
        }
        for k in 0..16 {
            let s: i32 = b[Q8_K_OFF_QS + 16 * k..Q8_K_OFF_QS + 16 * k + 16]
                .iter()
                .map(|&q| q as i8 as i32)
                .sum();
            let o = Q8_K_OFF_BSUMS + 2 * k;
            b[o..o + 2].copy_from_slice(&(s as i16).to_le_bytes());
        }
        b[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

// ---------------------------------------------------------------- dot products

/// Dot product of a weight row of type `ty` with activations from [`quantize_acts`].
pub fn vec_dot(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f32 {
    match ty {
        GgmlType::F32 => dot_f32(n, w, a),
        GgmlType::F16 => dot_f16(n, w, a),
        GgmlType::Q4_0 => dot_q4_0(n, w, a),
        GgmlType::Q4_1 => dot_q4_1(n, w, a),
        GgmlType::Q5_0 => dot_q5_0(n, w, a),
        GgmlType::Q8_0 => dot_q8_0(n, w, a),
        GgmlType::Q4_K => dot_q4_k(n, w, a),
        GgmlType::Q6_K => dot_q6_k(n, w, a),
        GgmlType::Q5_K => dot_q5_k(n, w, a),
        GgmlType::Q5_1 => dot_q5_1(n, w, a),
        GgmlType::BF16 => dot_bf16(n, w, a),
        GgmlType::Q2_K => dot_q2_k(n, w, a),
        GgmlType::Q3_K => dot_q3_k(n, w, a),
        GgmlType::IQ4_NL => dot_iq4_nl(n, w, a),
    }
}

pub fn dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    debug_assert!(w.len() >= 4 * n && a.len() >= 4 * n);
    let mut s = 0f64;
    for (w, a) in w.chunks_exact(4).zip(a.chunks_exact(4)).take(n) {
        s += (read_f32(w, 0) * read_f32(a, 0)) as f64;
    }
    s as f32
}

pub fn dot_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    debug_assert!(w.len() >= 2 * n && a.len() >= 2 * n);
    let mut s = 0f64;
    for (w, a) in w.chunks_exact(2).zip(a.chunks_exact(2)).take(n) {
        s += (read_f16(w, 0) * read_f16(a, 0)) as f64;
    }
    s as f32
}

/// BF16 weights against f32 activations (each product is exact in f32: 8 x 24 mantissa bits).
pub fn dot_bf16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    debug_assert!(w.len() >= 2 * n && a.len() >= 4 * n);
    let mut s = 0f64;
    for (w, a) in w.chunks_exact(2).zip(a.chunks_exact(4)).take(n) {
        s += (read_bf16(w, 0) * read_f32(a, 0)) as f64;
    }
    s as f32
}

/// Blocks of a row: (weight block, activation block) pairs.
fn blocks<'a>(
    n: usize,
    qk: usize,
    w: &'a [u8],
    wb: usize,
    a: &'a [u8],
    ab: usize,
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
    debug_assert!(n.is_multiple_of(qk));
    debug_assert!(w.len() >= n / qk * wb && a.len() >= n / qk * ab);
    w.chunks_exact(wb).zip(a.chunks_exact(ab)).take(n / qk)
}

pub fn dot_q4_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (w, a) in blocks(n, QK, w, Q4_0_BYTES, a, Q8_0_BYTES) {
        let mut sumi = 0i32;
        for j in 0..16 {
            let q = w[2 + j];
            sumi += ((q & 0xF) as i32 - 8) * a[2 + j] as i8 as i32;
            sumi += ((q >> 4) as i32 - 8) * a[18 + j] as i8 as i32;
        }
        sumf += sumi as f32 * read_f16(w, 0) * read_f16(a, 0);
    }
    sumf
}

pub fn dot_q4_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (w, a) in blocks(n, QK, w, Q4_1_BYTES, a, Q8_1_BYTES) {
        let mut sumi = 0i32;
        for j in 0..16 {
            let q = w[4 + j];
            sumi += (q & 0xF) as i32 * a[4 + j] as i8 as i32;
            sumi += (q >> 4) as i32 * a[20 + j] as i8 as i32;
        }
        sumf += read_f16(w, 0) * read_f16(a, 0) * sumi as f32 + read_f16(w, 2) * read_f16(a, 2);
    }
    sumf
}

pub fn dot_q5_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (w, a) in blocks(n, QK, w, Q5_0_BYTES, a, Q8_0_BYTES) {
        let qh = read_u32(w, 2);
        let mut sumi = 0i32;
        for j in 0..16 {
            let q = w[6 + j] as u32;
            let x0 = ((q & 0xF) | (((qh >> j) & 1) << 4)) as i32 - 16;
            let x1 = ((q >> 4) | (((qh >> (j + 16)) & 1) << 4)) as i32 - 16;
            sumi += x0 * a[2 + j] as i8 as i32 + x1 * a[18 + j] as i8 as i32;
        }
        sumf += read_f16(w, 0) * read_f16(a, 0) * sumi as f32;
    }
    sumf
}

/// Q5_1 x Q8_1 (ggml `ggml_vec_dot_q5_1_q8_1`): `d_w d_a sum(q_w q_a) + m_w s_a` per block.
pub fn dot_q5_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (w, a) in blocks(n, QK, w, Q5_1_BYTES, a, Q8_1_BYTES) {
        let qh = read_u32(w, 4);
        let mut sumi = 0i32;
        for j in 0..16 {
            let q = w[8 + j] as u32;
            let x0 = ((q & 0xF) | (((qh >> j) & 1) << 4)) as i32;
            let x1 = ((q >> 4) | (((qh >> (j + 16)) & 1) << 4)) as i32;
            sumi += x0 * a[4 + j] as i8 as i32 + x1 * a[20 + j] as i8 as i32;
        }
        sumf += read_f16(w, 0) * read_f16(a, 0) * sumi as f32 + read_f16(w, 2) * read_f16(a, 2);
    }
    sumf
}

/// IQ4_NL x Q8_0 (ggml `ggml_vec_dot_iq4_nl_q8_0`): the levels the nibbles pick times the
/// Q8_0 quants, summed as integers per block, times `d_a d_w`.
pub fn dot_iq4_nl(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (w, a) in blocks(n, QK, w, IQ4_NL_BYTES, a, Q8_0_BYTES) {
        let mut sumi = 0i32;
        for j in 0..16 {
            let q = w[2 + j];
            sumi += KVALUES_IQ4NL[(q & 0xF) as usize] as i32 * a[2 + j] as i8 as i32;
            sumi += KVALUES_IQ4NL[(q >> 4) as usize] as i32 * a[18 + j] as i8 as i32;
        }
        sumf += read_f16(a, 0) * read_f16(w, 0) * sumi as f32;
    }
    sumf
}

pub fn dot_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (w, a) in blocks(n, QK, w, Q8_0_BYTES, a, Q8_0_BYTES) {
        let sumi: i32 = w[2..34]
            .iter()
            .zip(&a[2..34])
            .map(|(&x, &y)| x as i8 as i32 * y as i8 as i32)
            .sum();
        sumf += sumi as f32 * (read_f16(w, 0) * read_f16(a, 0));
    }
    sumf
}

/// Q2_K x Q8_K (ggml `ggml_vec_dot_q2_K_q8_K`): per block
/// `yd d sum_g sc_g sum(q y) - yd dmin sum_g m_g bsum_g`, one scale and min per 16 elements,
/// so each min meets exactly one of Q8_K's block sums.
pub fn dot_q2_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    let mut q = [0u8; QK_K];
    for (w, a) in blocks(n, QK_K, w, Q2_K_BYTES, a, Q8_K_BYTES) {
        q2k_unpack(w, &mut q);
        let y = &a[Q8_K_OFF_QS..Q8_K_OFF_BSUMS];
        let (mut sumi, mut summ) = (0i32, 0i32);
        for (g, &sm) in w[..16].iter().enumerate() {
            let s: i32 = (16 * g..16 * g + 16)
                .map(|e| q[e] as i32 * y[e] as i8 as i32)
                .sum();
            sumi += (sm & 0xF) as i32 * s;
            summ += (sm >> 4) as i32 * q8k_bsum(a, g);
        }
        let yd = read_f32(a, 0);
        let (d, dmin) = (read_f16(w, Q2_K_OFF_D), read_f16(w, Q2_K_OFF_DMIN));
        sumf += yd * d * sumi as f32 - yd * dmin * summ as f32;
    }
    sumf
}

/// Q3_K x Q8_K (ggml `ggml_vec_dot_q3_K_q8_K`): per block `d yd sum_g scale_g sum(q y)`
/// with signed scales and signed quants, summed as integers and scaled once.
pub fn dot_q3_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    let mut q = [0i8; QK_K];
    for (w, a) in blocks(n, QK_K, w, Q3_K_BYTES, a, Q8_K_BYTES) {
        q3k_unpack(w, &mut q);
        let sc = q3k_scales(&w[Q3_K_OFF_SCALES..Q3_K_OFF_D]);
        let y = &a[Q8_K_OFF_QS..Q8_K_OFF_BSUMS];
        let mut sumi = 0i32;
        for (g, &s) in sc.iter().enumerate() {
            let t: i32 = (16 * g..16 * g + 16)
                .map(|e| q[e] as i32 * y[e] as i8 as i32)
                .sum();
            sumi += s as i32 * t;
        }
        sumf += read_f16(w, Q3_K_OFF_D) * read_f32(a, 0) * sumi as f32;
    }
    sumf
}

pub fn dot_q4_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (w, a) in blocks(n, QK_K, w, Q4_K_BYTES, a, Q8_K_BYTES) {
        let (sc, mn) = q4k_scales_mins(&w[Q4_K_OFF_SCALES..Q4_K_OFF_QS]);
        let qs = &w[Q4_K_OFF_QS..];
        let y = &a[Q8_K_OFF_QS..Q8_K_OFF_BSUMS];
        let (mut sumi, mut summ) = (0i32, 0i32);
        for c in 0..4 {
            let (mut lo, mut hi) = (0i32, 0i32);
            for l in 0..32 {
                let q = qs[32 * c + l];
                lo += (q & 0xF) as i32 * y[64 * c + l] as i8 as i32;
                hi += (q >> 4) as i32 * y[64 * c + 32 + l] as i8 as i32;
            }
            sumi += sc[2 * c] as i32 * lo + sc[2 * c + 1] as i32 * hi;
        }
        for (j, &m) in mn.iter().enumerate() {
            summ += m as i32 * (q8k_bsum(a, 2 * j) + q8k_bsum(a, 2 * j + 1));
        }
        let yd = read_f32(a, 0);
        sumf += read_f16(w, 0) * yd * sumi as f32 - read_f16(w, 2) * yd * summ as f32;
    }
    sumf
}

/// As [`dot_q4_k`] with five-bit quants (ggml `ggml_vec_dot_q5_K_q8_K`): per block
/// `d yd sum_j sc_j sum(q y) - dmin yd sum_j m_j bsum_j`.
pub fn dot_q5_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    let mut q = [0u8; QK_K];
    for (w, a) in blocks(n, QK_K, w, Q5_K_BYTES, a, Q8_K_BYTES) {
        let (sc, mn) = q4k_scales_mins(&w[Q5_K_OFF_SCALES..Q5_K_OFF_QH]);
        q5k_unpack(w, &mut q);
        let y = &a[Q8_K_OFF_QS..Q8_K_OFF_BSUMS];
        let (mut sumi, mut summ) = (0i32, 0i32);
        for j in 0..8 {
            let s: i32 = (32 * j..32 * j + 32)
                .map(|e| q[e] as i32 * y[e] as i8 as i32)
                .sum();
            sumi += sc[j] as i32 * s;
            summ += mn[j] as i32 * (q8k_bsum(a, 2 * j) + q8k_bsum(a, 2 * j + 1));
        }
        let yd = read_f32(a, 0);
        sumf += read_f16(w, 0) * yd * sumi as f32 - read_f16(w, 2) * yd * summ as f32;
    }
    sumf
}

pub fn dot_q6_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    let mut q = [0i8; QK_K];
    for (w, a) in blocks(n, QK_K, w, Q6_K_BYTES, a, Q8_K_BYTES) {
        q6k_unpack(w, &mut q);
        let y = &a[Q8_K_OFF_QS..Q8_K_OFF_BSUMS];
        let mut sumi = 0i32;
        for g in 0..16 {
            let s: i32 = (16 * g..16 * g + 16)
                .map(|e| q[e] as i32 * y[e] as i8 as i32)
                .sum();
            sumi += w[Q6_K_OFF_SCALES + g] as i8 as i32 * s;
        }
        sumf += read_f16(w, Q6_K_OFF_D) * read_f32(a, 0) * sumi as f32;
    }
    sumf
}
