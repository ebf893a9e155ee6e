//! Tests: hand-built blocks with hand-worked values, dot products against dequantised rows,
//! and every SIMD kernel set against the scalar one.

use super::blocks::*;
use super::*;

// ---------------------------------------------------------------- helpers

/// xorshift64*: tiny, seeded, good enough to scatter test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const H_0_25: [u8; 2] = [0x00, 0x34]; // f16 0.25
const H_0_5: [u8; 2] = [0x00, 0x38]; // f16 0.5
const H_1: [u8; 2] = [0x00, 0x3C]; // f16 1.0
const H_2: [u8; 2] = [0x00, 0x40]; // f16 2.0
const H_M1: [u8; 2] = [0x00, 0xBC]; // f16 -1.0

fn deq(ty: GgmlType, b: &[u8]) -> Vec<f32> {
    let mut y = vec![f32::NAN; b.len() / ty.block_bytes() * ty.block_len()];
    dequantize_row(ty, b, &mut y);
    y
}

// ---------------------------------------------------------------- hand-computed blocks

#[test]
fn f32_and_f16_rows() {
    let mut b = Vec::new();
    b.extend_from_slice(&1.5f32.to_le_bytes());
    b.extend_from_slice(&(-0.25f32).to_le_bytes());
    assert_eq!(deq(GgmlType::F32, &b), [1.5, -0.25]);
    // 0x3C00 = 1.0, 0xC000 = -2.0, 0x7BFF = 65504 (largest finite f16), 0x0001 = 2^-24.
    let b = [0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B, 0x01, 0x00];
    assert_eq!(deq(GgmlType::F16, &b), [1.0, -2.0, 65504.0, 2f32.powi(-24)]);
}

#[test]
fn bf16_row() {
    // bfloat16 = top 16 bits of an f32: 0x3FC0 = 1.5, 0xC000 = -2, 0x4049 = 3.140625,
    // 0x0001 = 2^-133 (smallest subnormal), 0xFF80 = -inf.
    let b = [0xC0, 0x3F, 0x00, 0xC0, 0x49, 0x40, 0x01, 0x00, 0x80, 0xFF];
    let want = [1.5, -2.0, 3.140625, 2f32.powi(-133), f32::NEG_INFINITY];
    assert_eq!(deq(GgmlType::BF16, &b), want);
    // Dot against f32 activations [2, 0.5, 1, 0, 0]: 3 - 1 + 3.140625 = 5.140625.
    let mut a = vec![0u8; GgmlType::BF16.act_row_bytes(4)];
    scalar::quantize_acts(GgmlType::BF16, &[2.0, 0.5, 1.0, 0.0], &mut a);
    assert_eq!(scalar::dot_bf16(4, &b, &a), 5.140625);
}

#[test]
fn q4_0_block() {
    // d = 0.5; qs[0] = 0x0F: elem 0 = (15-8)*0.5 = 3.5, elem 16 = (0-8)*0.5 = -4;
    // qs[1] = 0x81: elem 1 = (1-8)*0.5 = -3.5, elem 17 = (8-8)*0.5 = 0; other qs 0x88 -> 0.
    let mut b = [0x88u8; Q4_0_BYTES];
    b[..2].copy_from_slice(&H_0_5);
    b[2] = 0x0F;
    b[3] = 0x81;
    let mut want = [0f32; 32];
    (want[0], want[16], want[1]) = (3.5, -4.0, -3.5);
    assert_eq!(deq(GgmlType::Q4_0, &b), want);
}

#[test]
fn q4_1_block() {
    // d = 0.5, m = -1; qs[0] = 0x2F: elem 0 = 15*0.5-1 = 6.5, elem 16 = 2*0.5-1 = 0;
    // qs[15] = 0xA0: elem 15 = 0*0.5-1 = -1, elem 31 = 10*0.5-1 = 4; other qs 0 -> -1.
    let mut b = [0u8; Q4_1_BYTES];
    b[..2].copy_from_slice(&H_0_5);
    b[2..4].copy_from_slice(&H_M1);
    b[4] = 0x2F;
    b[4 + 15] = 0xA0;
    let mut want = [-1f32; 32];
    (want[0], want[16], want[31]) = (6.5, 0.0, 4.0);
    assert_eq!(deq(GgmlType::Q4_1, &b), want);
}

#[test]
fn q5_0_block() {
    // d = 0.25, qh = 0x0002_0001 (bits 0 and 17 set);
    // qs[0] = 0x3F: elem 0 = (15|16)-16 = 15 -> 3.75, elem 16 = 3-16 = -13 -> -3.25;
    // qs[1] = 0x00: elem 1 = 0-16 -> -4, elem 17 = (0|16)-16 = 0 -> 0;
    // all else q = 0 with no fifth bit -> -16*0.25 = -4.
    let mut b = [0u8; Q5_0_BYTES];
    b[..2].copy_from_slice(&H_0_25);
    b[2..6].copy_from_slice(&0x0002_0001u32.to_le_bytes());
    b[6] = 0x3F;
    let mut want = [-4f32; 32];
    (want[0], want[16], want[17]) = (3.75, -3.25, 0.0);
    assert_eq!(deq(GgmlType::Q5_0, &b), want);
}

#[test]
fn q5_1_block() {
    // d = 0.5, m = -1, qh = 0x8000_0003 (bits 0, 1 and 31 set);
    // qs[0] = 0x2F: elem 0 = (15|16)*0.5-1 = 14.5, elem 16 = 2*0.5-1 = 0;
    // qs[1] = 0x00: elem 1 = (0|16)*0.5-1 = 7, elem 17 = -1;
    // qs[15] = 0xA0: elem 15 = -1, elem 31 = (10|16)*0.5-1 = 12; every other q 0 -> -1.
    let mut b = [0u8; Q5_1_BYTES];
    b[..2].copy_from_slice(&H_0_5);
    b[2..4].copy_from_slice(&H_M1);
    b[4..8].copy_from_slice(&0x8000_0003u32.to_le_bytes());
    b[8] = 0x2F;
    b[8 + 15] = 0xA0;
    let mut want = [-1f32; 32];
    (want[0], want[16], want[1], want[31]) = (14.5, 0.0, 7.0, 12.0);
    assert_eq!(deq(GgmlType::Q5_1, &b), want);
    // Against Q8_1 of x = [127, 0, 0, ..., 0, -127 at 31]: d = 1, q = x, s = d * 0 = 0:
    // dot = 14.5 * 127 + 12 * (-127) = 317.5; the kernel: d_w d_a sumi + m s
    // = 0.5 * (31 * 127 - 26 * 127) + (-1) * 0 = 317.5.
    let mut x = [0f32; 32];
    (x[0], x[31]) = (127.0, -127.0);
    let mut a = [0u8; Q8_1_BYTES];
    scalar::quantize_q8_1(&x, &mut a);
    assert_eq!(scalar::dot_q5_1(32, &b, &a), 317.5);
}

#[test]
fn iq4_nl_block() {
    // Block 0: d = 0.5; nibble order as Q4_0, a nibble picks a level of
    // [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]:
    // qs[0] = 0xF0: elem 0 = 0.5 * -127 = -63.5, elem 16 = 0.5 * 113 = 56.5;
    // qs[1] = 0x78: elem 1 = 0.5 * 1 = 0.5, elem 17 = 0.5 * -10 = -5;
    // qs[15] = 0x3C: elem 15 = 0.5 * 53 = 26.5, elem 31 = 0.5 * -65 = -32.5;
    // every other qs 0x88: level 1 -> 0.5.
    // Block 1: d = 1, qs[j] = j | (15 - j) << 4: elems 0..16 are the levels in order, elems
    // 16..32 the levels backwards.
    let levels = [
        -127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0, 1.0, 13.0, 25.0, 38.0, 53.0,
        69.0, 89.0, 113.0,
    ];
    let mut b = [0x88u8; 2 * IQ4_NL_BYTES];
    b[..2].copy_from_slice(&H_0_5);
    (b[2], b[3], b[17]) = (0xF0, 0x78, 0x3C);
    b[18..20].copy_from_slice(&H_1);
    for j in 0..16 {
        b[20 + j] = j as u8 | (15 - j as u8) << 4;
    }
    let mut want = [0.5f32; 64];
    (want[0], want[16], want[17], want[15], want[31]) = (-63.5, 56.5, -5.0, 26.5, -32.5);
    want[32..48].copy_from_slice(&levels);
    for j in 0..16 {
        want[48 + j] = levels[15 - j];
    }
    assert_eq!(deq(GgmlType::IQ4_NL, &b), want);
    // Block 0 against Q8_0 of x = [127 at 0, -127 at 16, 2 at 31, else 0]: d = 1, q = x:
    // -63.5 * 127 + 56.5 * -127 - 32.5 * 2 = -15305; the kernel: d_w d_a sum(level q)
    // = 0.5 * (-127 * 127 + 113 * -127 - 65 * 2) = 0.5 * -30610.
    let mut x = [0f32; 32];
    (x[0], x[16], x[31]) = (127.0, -127.0, 2.0);
    let mut a = [0u8; Q8_0_BYTES];
    scalar::quantize_q8_0(&x, &mut a);
    assert_eq!(read_f16(&a, 0), 1.0);
    let exact: f32 = want.iter().zip(&x).map(|(w, x)| w * x).sum();
    assert_eq!(exact, -15305.0);
    assert_eq!(dot_by_every_set(GgmlType::IQ4_NL, 32, &b, &a), exact);
}

#[test]
fn q8_0_block() {
    // d = 2; qs[0] = 1 -> 2, qs[1] = -1 -> -2, qs[5] = 127 -> 254, qs[31] = -128 -> -256.
    let mut b = [0u8; Q8_0_BYTES];
    b[..2].copy_from_slice(&H_2);
    (b[2], b[3], b[7], b[33]) = (1, 0xFF, 127, 0x80);
    let mut want = [0f32; 32];
    (want[0], want[1], want[5], want[31]) = (2.0, -2.0, 254.0, -256.0);
    assert_eq!(deq(GgmlType::Q8_0, &b), want);
}

#[test]
fn q4_k_block() {
    // d = 1, dmin = 0.5. Sub-block scales sc = [1, 2, 0, 0, 33, 0, 0, 63],
    // mins mn = [0, 3, 0, 0, 0, 20, 0, 0]. Packing (see blocks::q4k_scale_min):
    //   s[0] = sc0 | (sc4 >> 4) << 6 = 1 | 2 << 6 = 0x81    s[1] = sc1 = 2
    //   s[3] = sc3 | (sc7 >> 4) << 6 = 3 << 6 = 0xC0        s[5] = mn1 | (mn5 >> 4) << 6 = 0x43
    //   s[8] = (sc4 & 15) | (mn4 & 15) << 4 = 0x01          s[9] = (mn5 & 15) << 4 = 0x40
    //   s[11] = sc7 & 15 = 0x0F
    // qs[0] = 0x53: elem 0 (sub 0) = 1*1*3 - 0.5*0 = 3; elem 32 (sub 1) = 1*2*5 - 0.5*3 = 8.5
    // qs[64] = 0x07: elem 128 (sub 4) = 33*7 = 231; elem 160 (sub 5) = 0 - 0.5*20 = -10
    // qs[127] = 0xF0: elem 223 (sub 6) = 0; elem 255 (sub 7) = 63*15 = 945
    // Every other q is 0, giving -dmin*mn: -1.5 in sub-block 1, -10 in sub-block 5, else 0.
    let mut b = [0u8; Q4_K_BYTES];
    b[..2].copy_from_slice(&H_1);
    b[2..4].copy_from_slice(&H_0_5);
    let s = &mut b[Q4_K_OFF_SCALES..Q4_K_OFF_QS];
    (s[0], s[1], s[3], s[5], s[8], s[9], s[11]) = (0x81, 2, 0xC0, 0x43, 0x01, 0x40, 0x0F);
    let qs = &mut b[Q4_K_OFF_QS..];
    (qs[0], qs[64], qs[127]) = (0x53, 0x07, 0xF0);
    let mut want = [0f32; 256];
    want[32..64].fill(-1.5);
    want[160..192].fill(-10.0);
    (want[0], want[32], want[128], want[160], want[255]) = (3.0, 8.5, 231.0, -10.0, 945.0);
    assert_eq!(deq(GgmlType::Q4_K, &b), want);
}

#[test]
fn q5_k_block() {
    // d = 1, dmin = 0.5; scales and mins packed exactly as in q4_k_block:
    // sc = [1, 2, 0, 0, 33, 0, 0, 63], mn = [0, 3, 0, 0, 0, 20, 0, 0].
    // qh[0] = 0b1000_0011: fifth bit of elem 0 (chunk 0 low, bit 0), elem 32 (chunk 0 high,
    //   bit 1) and elem 224 (chunk 3 high, bit 7). qh[1] = 0b0001_0000: elem 128 + 1 = 129
    //   (chunk 2 low, bit 4). qh[31] = 0b0010_0000: elem 160 + 31 = 191 (chunk 2 high, bit 5).
    // qs[0] = 0x53: elem 0 = 1 * (3 + 16) = 19; elem 32 = 2 * (5 + 16) - 1.5 = 40.5.
    // qs[65] = 0x07: elem 129 = 33 * (7 + 16) = 759; elem 161 = 0 - 10 = -10.
    // qs[96] = 0xF0: elem 192 = 0 (sc 0, mn 0); elem 224 = 63 * (15 + 16) = 1953.
    // elem 191: q = 0 + 16 but sc 0 -> -10 like the rest of sub-block 5.
    // elem 255: q = 0 -> 0. All other q = 0 -> -dmin*mn: -1.5 in sub-block 1, -10 in 5.
    let mut b = [0u8; Q5_K_BYTES];
    b[..2].copy_from_slice(&H_1);
    b[2..4].copy_from_slice(&H_0_5);
    let s = &mut b[Q5_K_OFF_SCALES..Q5_K_OFF_QH];
    (s[0], s[1], s[3], s[5], s[8], s[9], s[11]) = (0x81, 2, 0xC0, 0x43, 0x01, 0x40, 0x0F);
    let qh = &mut b[Q5_K_OFF_QH..Q5_K_OFF_QS];
    (qh[0], qh[1], qh[31]) = (0b1000_0011, 0b0001_0000, 0b0010_0000);
    let qs = &mut b[Q5_K_OFF_QS..];
    (qs[0], qs[65], qs[96]) = (0x53, 0x07, 0xF0);
    let mut want = [0f32; 256];
    want[32..64].fill(-1.5);
    want[160..192].fill(-10.0);
    (want[0], want[32], want[129], want[161], want[224]) = (19.0, 40.5, 759.0, -10.0, 1953.0);
    assert_eq!(deq(GgmlType::Q5_K, &b), want);
    // Dot against Q8_K activations y = 1 everywhere (d = 1: x = -127 in the first element
    // makes max = -127, iscale = 1; then y[0] = -127): sum of want with elem 0 weighted -127.
    let mut x = [1f32; 256];
    x[0] = -127.0;
    let mut a = vec![0u8; GgmlType::Q5_K.act_row_bytes(256)];
    scalar::quantize_q8_k(&x, &mut a);
    let exact: f32 = want.iter().zip(&x).map(|(w, x)| w * x).sum();
    assert_eq!(
        exact,
        19.0 * -127.0 + 40.5 + 31.0 * -1.5 + 759.0 + 32.0 * -10.0 + 1953.0
    );
    assert_eq!(scalar::dot_q5_k(256, &b, &a), exact);
}

/// Q8_K activations of x = 1 everywhere but x[0] = -127: max = -127, so iscale = 1, d = 1
/// and the quants are x itself; every bsum is 16 but the first, -127 + 15 = -112.
fn ones_but_first_q8_k() -> ([f32; QK_K], Vec<u8>) {
    let mut x = [1f32; QK_K];
    x[0] = -127.0;
    let mut a = vec![0u8; Q8_K_BYTES];
    scalar::quantize_q8_k(&x, &mut a);
    assert_eq!(
        (read_f32(&a, 0), q8k_bsum(&a, 0), q8k_bsum(&a, 1)),
        (1.0, -112, 16)
    );
    (x, a)
}

/// The dot of a hand-built block with its activations, by every kernel set this CPU runs: the
/// hand-worked values are exact in f32 whatever the order of summation.
fn dot_by_every_set(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f32 {
    let want = scalar::vec_dot(ty, n, w, a);
    for k in supported_kernels() {
        assert_eq!(k.vec_dot(ty, n, w, a), want, "{} {}", k.name, ty.name());
    }
    want
}

#[test]
fn q2_k_block() {
    // d = 1, dmin = 0.5. scales[g] = sc | m << 4: group 0 (elems 0..16) sc 1, m 2 (0x21);
    // group 1 (16..32) sc 3, m 0 (0x03); group 5 (80..96) sc 2, m 15 (0xF2);
    // group 15 (240..256) sc 15, m 1 (0x1F); every other group sc 0, m 0.
    // Element 128h + 32j + l is bits 2j..2j+2 of qs[32h + l]:
    // qs[0] = 0x03: elem 0 (j 0) q = 3 -> 1*1*3 - 0.5*2 = 2; elems 32, 64, 96 q = 0 (groups
    //   2, 4, 6: 0).
    // qs[17] = 0x21: elem 17 (j 0, group 1) q = 1 -> 3*1 = 3; elem 49 (j 1, group 3) q = 0;
    //   elem 81 (j 2, group 5) q = 2 -> 2*2 - 0.5*15 = -3.5; elem 113 (j 3, group 7) q = 0.
    // qs[63] = 0xC0: elem 255 (h 1, j 3, l 31, group 15) q = 3 -> 15*3 - 0.5 = 44.5.
    // Every other q is 0, giving -dmin*m: -1 in group 0, -7.5 in group 5, -0.5 in group 15.
    let mut b = [0u8; Q2_K_BYTES];
    (b[0], b[1], b[5], b[15]) = (0x21, 0x03, 0xF2, 0x1F);
    let qs = &mut b[Q2_K_OFF_QS..Q2_K_OFF_D];
    (qs[0], qs[17], qs[63]) = (0x03, 0x21, 0xC0);
    b[Q2_K_OFF_D..Q2_K_OFF_DMIN].copy_from_slice(&H_1);
    b[Q2_K_OFF_DMIN..].copy_from_slice(&H_0_5);
    let mut want = [0f32; 256];
    want[0..16].fill(-1.0);
    want[80..96].fill(-7.5);
    want[240..256].fill(-0.5);
    (want[0], want[17], want[81], want[255]) = (2.0, 3.0, -3.5, 44.5);
    assert_eq!(deq(GgmlType::Q2_K, &b), want);
    // Dot against y = [-127, 1, 1, ...] (d = 1): sum of want with elem 0 weighted -127
    // = 2 * -127 + 15 * -1 + 3 + 15 * -7.5 - 3.5 + 15 * -0.5 + 44.5 = -345. The kernel's way:
    // sum_g sc_g sum(q y) = 1 * (3 * -127) + 3 * 1 + 2 * 2 + 15 * 3 = -329;
    // sum_g m_g bsum_g = 2 * -112 + 15 * 16 + 1 * 16 = 32; 1 * -329 - 0.5 * 32 = -345.
    let (x, a) = ones_but_first_q8_k();
    let exact: f32 = want.iter().zip(&x).map(|(w, x)| w * x).sum();
    assert_eq!(exact, -345.0);
    assert_eq!(dot_by_every_set(GgmlType::Q2_K, 256, &b, &a), exact);
}

#[test]
fn q3_k_block() {
    // d = 0.5. Scales (stored + 32): scale 0 = 1 (33: low 1, top 2), scale 5 = -2 (30: low
    // 14, top 1), scale 10 = 31 (63: low 15, top 3), scale 15 = -32 (0), every other 0 (32:
    // low 0, top 2). Low nibbles: scale j < 8 in s[j] low, j >= 8 in s[j - 8] high: s[0] = 0x01,
    // s[5] = 0x0E, s[2] = 0xF0. Top bits of scale j at bits 2 (j / 4) of s[8 + j % 4]:
    // s[8] = 0b10_10_10_10 (scales 0, 4, 8, 12), s[9] = 0b10_10_01_10 (scale 5 top 1),
    // s[10] = 0b10_11_10_10 (scale 10 top 3), s[11] = 0b00_10_10_10 (scale 15 top 0).
    // Element e = 128h + 32j + l: low bits (qs[32h + l] >> 2j) & 3, third bit e / 32 of
    // hmask[l]; q = low bits - 4 unless that bit is set. With everything 0, q = -4:
    // group 0 = 0.5*1*-4 = -2, group 5 = 0.5*-2*-4 = 4, group 10 = 0.5*31*-4 = -62,
    // group 15 = 0.5*-32*-4 = 64, the others 0. Then:
    // elem 0: qs[0] = 0x03 (low 3), hmask[0] bit 0 set -> q = 3 -> 0.5*1*3 = 1.5;
    // elem 81 (h 0, j 2, l 17; group 5): qs[17] = 0x10 (bits 4-5: 1), hmask[17] bit 2 set
    //   -> q = 1 -> 0.5*-2*1 = -1;
    // elem 161 (h 1, j 1, l 1; group 10): qs[33] = 0x08 (bits 2-3: 2), hmask[1] bit 5 clear
    //   -> q = -2 -> 0.5*31*-2 = -31;
    // elem 255 (h 1, j 3, l 31; group 15): low bits 0, hmask[31] bit 7 set -> q = 0 -> 0.
    let mut b = [0u8; Q3_K_BYTES];
    (b[0], b[17], b[31]) = (0x01, 0x04, 0x80);
    let qs = &mut b[Q3_K_OFF_QS..Q3_K_OFF_SCALES];
    (qs[0], qs[17], qs[33]) = (0x03, 0x10, 0x08);
    b[Q3_K_OFF_SCALES..Q3_K_OFF_D]
        .copy_from_slice(&[0x01, 0, 0xF0, 0, 0, 0x0E, 0, 0, 0xAA, 0xA6, 0xBA, 0x2A]);
    b[Q3_K_OFF_D..].copy_from_slice(&H_0_5);
    let mut want = [0f32; 256];
    want[0..16].fill(-2.0);
    want[80..96].fill(4.0);
    want[160..176].fill(-62.0);
    want[240..256].fill(64.0);
    (want[0], want[81], want[161], want[255]) = (1.5, -1.0, -31.0, 0.0);
    assert_eq!(deq(GgmlType::Q3_K, &b), want);
    // Dot against y = [-127, 1, 1, ...] (d = 1): 1.5 * -127 + 15 * -2 + 15 * 4 - 1
    // + 15 * -62 - 31 + 15 * 64 = -162.5. The kernel's way, d * sum_g scale_g sum(q y):
    // 0.5 * (1 * (3 * -127 - 60) - 2 * (-60 + 1) + 31 * (-60 - 2) - 32 * (-60)) = 0.5 * -325.
    let (x, a) = ones_but_first_q8_k();
    let exact: f32 = want.iter().zip(&x).map(|(w, x)| w * x).sum();
    assert_eq!(exact, -162.5);
    assert_eq!(dot_by_every_set(GgmlType::Q3_K, 256, &b, &a), exact);
}

#[test]
fn q6_k_block() {
    // d = 0.5; scales: group 0 = 2, group 2 = -1, group 8 = 3, group 15 = 4, others 0.
    // elem 0 (half 0, l 0, group 0): ql[0] low = 5, qh[0] bits 0-1 = 2 -> q = 5 | 32 = 37,
    //   37-32 = 5 -> 0.5*2*5 = 5. Rest of group 0: q = 0 -> 0.5*2*(-32) = -32.
    // group 2 (elems 32..48): q = 0 -> 0.5*(-1)*(-32) = 16.
    // elem 130 (half 1, l 2, group 8): ql[64+2] low = 15, qh[32+2] bits 0-1 = 3 -> q = 63,
    //   31 -> 0.5*3*31 = 46.5; rest of group 8: 0.5*3*(-32) = -48.
    // elem 255 (half 1, l 31, fourth quarter): ql[64+63] high = 8, qh[32+31] bits 6-7 = 1
    //   -> q = 8 | 16 = 24, -8 -> 0.5*4*(-8) = -16; rest of group 15: 0.5*4*(-32) = -64.
    let mut b = [0u8; Q6_K_BYTES];
    b[0] = 0x05;
    b[66] = 0x0F;
    b[127] = 0x80;
    b[Q6_K_OFF_QH] = 0x02;
    b[Q6_K_OFF_QH + 34] = 0x03;
    b[Q6_K_OFF_QH + 63] = 0x40;
    let sc = &mut b[Q6_K_OFF_SCALES..Q6_K_OFF_D];
    (sc[0], sc[2], sc[8], sc[15]) = (2, (-1i8) as u8, 3, 4);
    b[Q6_K_OFF_D..].copy_from_slice(&H_0_5);
    let mut want = [0f32; 256];
    want[0..16].fill(-32.0);
    want[32..48].fill(16.0);
    want[128..144].fill(-48.0);
    want[240..256].fill(-64.0);
    (want[0], want[130], want[255]) = (5.0, 46.5, -16.0);
    assert_eq!(deq(GgmlType::Q6_K, &b), want);
}

#[test]
fn q8_0_and_q8_k_activation_rounding() {
    // Q8_0: amax = 127 -> d = 1; the reference rounds half away from zero: 2.5 -> 3, -0.5 -> -1.
    let mut x = [0f32; 256];
    (x[0], x[1], x[2], x[3]) = (-127.0, 2.5, 3.5, -0.5);
    let mut b = vec![0u8; GgmlType::Q8_0.act_row_bytes(256)];
    scalar::quantize_q8_0(&x, &mut b);
    assert_eq!(read_f16(&b, 0), 1.0);
    assert_eq!(b[2..6], [(-127i8) as u8, 3, 4, (-1i8) as u8]);
    // Q8_K: max = -127 (signed) -> iscale = -127/max = 1, d = 1; half to even: 2.5 -> 2,
    // 3.5 -> 4, -0.5 -> 0; bsums[0] = -127 + 2 + 4 = -121.
    let mut b = vec![0u8; GgmlType::Q4_K.act_row_bytes(256)];
    scalar::quantize_q8_k(&x, &mut b);
    assert_eq!(read_f32(&b, 0), 1.0);
    assert_eq!(b[4..8], [(-127i8) as u8, 2, 4, 0]);
    assert_eq!(q8k_bsum(&b, 0), -121);
    // Positive max: d is negative (d = -max/127) and the max itself lands on -127.
    let x: Vec<f32> = (0..256).map(|i| i as f32 / 255.0).collect();
    scalar::quantize_q8_k(&x, &mut b);
    assert_eq!(read_f32(&b, 0), -1.0 / 127.0);
    assert_eq!(b[4 + 255] as i8, -127);
}

// ---------------------------------------------------------------- metadata

#[test]
fn type_ids_and_sizes() {
    for ty in GgmlType::ALL {
        assert_eq!(GgmlType::from_id(ty.id()).unwrap(), ty);
        assert_eq!(
            ty.row_bytes(ty.block_len() * 3).unwrap(),
            3 * ty.block_bytes()
        );
    }
    let msg = |id| GgmlType::from_id(id).unwrap_err().to_string();
    assert_eq!(msg(16), "unsupported tensor type IQ2_XXS (id 16)");
    assert_eq!(msg(29), "unsupported tensor type IQ1_M (id 29)");
    assert_eq!(msg(999), "unsupported tensor type unknown type id 999");
    let e = GgmlType::Q4_K.row_bytes(300).unwrap_err().to_string();
    assert!(e.contains("Q4_K") && e.contains("300"), "{e}");
    assert!(GgmlType::Q4_0.row_bytes(33).is_err());
    assert_eq!(GgmlType::Q4_1.act_row_bytes(64), 72);
    assert_eq!(GgmlType::Q6_K.act_row_bytes(512), 584);
    assert_eq!(GgmlType::F16.act_row_bytes(5), 10);
    assert_eq!(
        (GgmlType::Q2_K.block_bytes(), GgmlType::Q2_K.block_len()),
        (84, 256)
    );
    assert_eq!(GgmlType::Q2_K.act_row_bytes(512), 584);
    assert_eq!(
        (GgmlType::Q3_K.block_bytes(), GgmlType::Q3_K.block_len()),
        (110, 256)
    );
    assert_eq!(GgmlType::Q3_K.act_row_bytes(512), 584);
    assert_eq!(
        (GgmlType::IQ4_NL.block_bytes(), GgmlType::IQ4_NL.block_len()),
        (18, 32)
    );
    assert_eq!(GgmlType::IQ4_NL.act_row_bytes(64), 68);
}

// ---------------------------------------------------------------- random rows

/// A random but well-formed weight row: random quants, finite scales of about `1/16`.
fn random_row(rng: &mut Rng, ty: GgmlType, n: usize) -> Vec<u8> {
    let nb = n / ty.block_len();
    let mut b = rng.bytes(nb * ty.block_bytes());
    let put = |b: &mut [u8], off: usize, rng: &mut Rng| write_f16(b, off, rng.f() / 16.0);
    match ty {
        GgmlType::F32 => {
            for c in b.chunks_exact_mut(4) {
                c.copy_from_slice(&rng.f().to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for c in b.chunks_exact_mut(2) {
                put(c, 0, rng);
            }
        }
        GgmlType::BF16 => {
            for c in b.chunks_exact_mut(2) {
                c.copy_from_slice(&((rng.f().to_bits() >> 16) as u16).to_le_bytes());
            }
        }
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::Q6_K | GgmlType::IQ4_NL => {
            let off = if ty == GgmlType::Q6_K { Q6_K_OFF_D } else { 0 };
            for c in b.chunks_exact_mut(ty.block_bytes()) {
                put(c, off, rng);
            }
        }
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => {
            for c in b.chunks_exact_mut(ty.block_bytes()) {
                put(c, 0, rng);
                put(c, 2, rng);
            }
        }
        GgmlType::Q2_K => {
            for c in b.chunks_exact_mut(ty.block_bytes()) {
                put(c, Q2_K_OFF_D, rng);
                put(c, Q2_K_OFF_DMIN, rng);
            }
        }
        GgmlType::Q3_K => {
            for c in b.chunks_exact_mut(ty.block_bytes()) {
                put(c, Q3_K_OFF_D, rng);
            }
        }
    }
    b
}

/// Random activations with a few outliers, as real hidden states have.
fn random_acts(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| rng.f() * if i % 97 == 3 { 20.0 } else { 1.0 })
        .collect()
}

fn sizes(ty: GgmlType) -> Vec<usize> {
    let blocks: &[usize] = match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            &[1, 3, 7, 8, 15, 16, 17, 31, 32, 33, 64, 100, 1000]
        }
        GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => {
            &[1, 2, 3, 5, 6]
        }
        _ => &[1, 2, 3, 4, 5, 7, 8, 9, 16, 33, 48],
    };
    blocks.iter().map(|b| b * ty.block_len()).collect()
}

/// Quantising activations perturbs each `x` by at most half a step (d/2) plus the f16 rounding
/// of d (2^-11 relative, times |q| <= 127 steps): so |dot(w, x) - vec_dot| is at most
/// sum |w_i| * (d_b/2 + amax_b * 2^-10) over blocks b, plus Q4_1's `m * s` term where s is
/// stored in f16, plus f32 accumulation noise.
#[test]
fn vec_dot_matches_dequantised_dot() {
    let mut rng = Rng(0x5EED_0001);
    for ty in GgmlType::ALL {
        let act_block = match ty {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => {
                QK_K
            }
            _ => QK,
        };
        for n in sizes(ty) {
            let w = random_row(&mut rng, ty, n);
            let x = random_acts(&mut rng, n);
            let wf = deq(ty, &w);
            let mut a = vec![0u8; ty.act_row_bytes(n)];
            scalar::quantize_acts(ty, &x, &mut a);
            let exact: f64 = wf.iter().zip(&x).map(|(&w, &x)| w as f64 * x as f64).sum();
            let mut tol = 1e-5
                * wf.iter()
                    .zip(&x)
                    .map(|(w, x)| (w * x).abs() as f64)
                    .sum::<f64>();
            for (wb, xb) in wf.chunks(act_block).zip(x.chunks(act_block)) {
                let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
                let step = match ty {
                    GgmlType::F32 | GgmlType::BF16 => 0.0,
                    GgmlType::F16 => amax * 2f64.powi(-11),
                    _ => amax / 127.0 * 0.5 + amax * 2f64.powi(-10),
                };
                tol += step * wb.iter().map(|w| w.abs() as f64).sum::<f64>();
            }
            if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                for (wb, ab) in w.chunks(ty.block_bytes()).zip(a.chunks(Q8_1_BYTES)) {
                    tol += (read_f16(wb, 2) * read_f16(ab, 2)).abs() as f64 * 2f64.powi(-10);
                }
            }
            let got = scalar::vec_dot(ty, n, &w, &a) as f64;
            assert!(
                (got - exact).abs() <= tol + 1e-6,
                "{} n={n}: vec_dot {got} vs exact {exact} (tol {tol})",
                ty.name()
            );
        }
    }
}

#[test]
fn rows_and_tile_match_single_dots() {
    let mut rng = Rng(0x5EED_0002);
    for k in supported_kernels() {
        for ty in GgmlType::ALL {
            // An odd number of 32-blocks exercises the pair kernels' tails.
            for n in [2 * QK_K, 9 * QK]
                .into_iter()
                .filter(|n| n % ty.block_len() == 0)
            {
                let rb = ty.row_bytes(n).unwrap() + 6; // padded rows: the stride is honoured
                let (n_rows, n_acts) = (11, 6);
                let mut w = vec![0u8; rb * n_rows];
                for r in w.chunks_exact_mut(rb) {
                    r[..rb - 6].copy_from_slice(&random_row(&mut rng, ty, n));
                }
                let arb = ty.act_row_bytes(n) + 2;
                let mut acts = vec![0u8; arb * n_acts];
                for a in acts.chunks_exact_mut(arb) {
                    k.quantize_acts(ty, &random_acts(&mut rng, n), &mut a[..arb - 2]);
                }
                let single = |r: usize, a: usize| k.vec_dot(ty, n, &w[r * rb..], &acts[a * arb..]);
                let what = |s: &str| format!("{} {} n={n} {s}", k.name, ty.name());
                // Each output has its own accumulators, in the same order as a single dot:
                // the results must be identical.
                let mut out = vec![0f32; n_rows];
                k.vec_dot_rows(ty, n, &w, rb, &acts[arb..], &mut out);
                for (r, &o) in out.iter().enumerate() {
                    assert_eq!(o, single(r, 1), "{}", what(&format!("rows r={r}")));
                }
                let stride = n_rows + 3;
                let mut out = vec![f32::NAN; stride * n_acts];
                k.dot_tile(ty, n, &w, rb, n_rows, &acts, arb, n_acts, &mut out, stride);
                for a in 0..n_acts {
                    for r in 0..n_rows {
                        let (got, want) = (out[a * stride + r], single(r, a));
                        assert_eq!(got, want, "{}", what(&format!("tile a={a} r={r}")));
                    }
                }
            }
        }
    }
    // The free functions take the best set.
    let ty = GgmlType::Q4_K;
    let (n, rb) = (QK_K, Q4_K_BYTES);
    let w = random_row(&mut rng, ty, 3 * n);
    let mut a = vec![0u8; ty.act_row_bytes(n)];
    quantize_acts(ty, &random_acts(&mut rng, n), &mut a);
    let mut out = [0f32; 3];
    vec_dot_rows(ty, n, &w, rb, &a, &mut out);
    let mut tile = [0f32; 3];
    dot_tile(ty, n, &w, rb, 3, &a, a.len(), 1, &mut tile, 3);
    for r in 0..3 {
        assert_eq!(out[r], vec_dot(ty, n, &w[r * rb..][..rb], &a));
        assert_eq!(tile[r], out[r]);
    }
}

// ---------------------------------------------------------------- SIMD against scalar

fn simd_sets() -> Vec<&'static Kernels> {
    let v: Vec<_> = supported_kernels().into_iter().skip(1).collect();
    let names: Vec<_> = v.iter().map(|k| k.name).collect();
    eprintln!("SIMD kernel sets tested against scalar: {names:?} (others skipped: CPU lacks them)");
    v
}

#[test]
fn simd_dots_match_scalar() {
    for k in simd_sets() {
        let mut rng = Rng(0x5EED_0003);
        for ty in GgmlType::ALL {
            for n in sizes(ty) {
                let w = random_row(&mut rng, ty, n);
                let x = random_acts(&mut rng, n);
                let mut a = vec![0u8; ty.act_row_bytes(n)];
                scalar::quantize_acts(ty, &x, &mut a);
                let want = scalar::vec_dot(ty, n, &w, &a);
                let got = k.vec_dot(ty, n, &w, &a);
                // Integer block sums are exact on both paths; only the f32 accumulation order
                // differs, so the error scales with the sum of |terms|.
                let wf = deq(ty, &w);
                let scale: f32 = wf.iter().zip(&x).map(|(w, x)| (w * x).abs()).sum();
                assert!(
                    (got - want).abs() <= 2e-5 * scale + 1e-6,
                    "{} {} n={n}: {got} vs scalar {want}",
                    k.name,
                    ty.name()
                );
            }
        }
    }
}

#[test]
fn simd_quantizers_match_scalar() {
    for k in simd_sets() {
        let mut rng = Rng(0x5EED_0004);
        for ty in [
            GgmlType::Q8_0,
            GgmlType::Q4_1,
            GgmlType::Q4_K,
            GgmlType::F16,
        ] {
            for n in sizes(ty).into_iter().chain([0]) {
                let mut x = random_acts(&mut rng, n);
                if n >= 64 {
                    x[..32].fill(0.0); // an all-zero block
                    x[40] = -x[41].abs() - 30.0; // a negative max
                }
                let len = ty.act_row_bytes(n);
                let (mut want, mut got) = (vec![0u8; len], vec![0xAAu8; len]);
                scalar::quantize_acts(ty, &x, &mut want);
                k.quantize_acts(ty, &x, &mut got);
                let what = format!("{} {} n={n}", k.name, ty.name());
                match ty {
                    // Q8_K has no SIMD shortcut in llama.cpp: ours must be bit-exact.
                    GgmlType::Q4_K | GgmlType::F16 => assert_eq!(got, want, "{what}"),
                    // Q8_0/Q8_1 follow llama.cpp's x86 path: q = round-half-even(x * 127/amax)
                    // instead of round-half-away(x * (1/d)): a quant may differ by one.
                    _ => {
                        let bb = if ty == GgmlType::Q8_0 {
                            Q8_0_BYTES
                        } else {
                            Q8_1_BYTES
                        };
                        let hdr = bb - QK;
                        for (g, w) in got.chunks(bb).zip(want.chunks(bb)) {
                            assert_eq!(g[..2], w[..2], "{what}: d");
                            let mut dsum = 0i32;
                            for (&qg, &qw) in g[hdr..].iter().zip(&w[hdr..]) {
                                let diff = qg as i8 as i32 - qw as i8 as i32;
                                assert!(diff.abs() <= 1, "{what}: q {qg} vs {qw}");
                                dsum += diff;
                            }
                            if hdr == 4 {
                                let d = read_f16(w, 0);
                                let (sg, sw) = (read_f16(g, 2), read_f16(w, 2));
                                let tol = (dsum.abs() as f32 * d + sw.abs() * 1e-3) * 1.01;
                                assert!((sg - sw).abs() <= tol, "{what}: s {sg} vs {sw}");
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn q4_k_scale_unpacking_agrees() {
    let mut rng = Rng(0x5EED_0005);
    for _ in 0..200 {
        let s = rng.bytes(12);
        let (sc, mn) = q4k_scales_mins(&s);
        for j in 0..8 {
            assert_eq!((sc[j], mn[j]), q4k_scale_min(&s, j), "{s:?} j={j}");
        }
    }
}

#[test]
fn q3_k_scale_unpacking_agrees() {
    let mut rng = Rng(0x5EED_0006);
    for _ in 0..200 {
        let s = rng.bytes(12);
        let sc = q3k_scales(&s);
        for (j, &sc) in sc.iter().enumerate() {
            assert_eq!(sc as i32, q3k_scale(&s, j) as i32 - 32, "{s:?} j={j}");
        }
    }
}

#[test]
fn short_slices_panic_instead_of_reading_past_them() {
    let k = kernels();
    let ty = GgmlType::Q4_0;
    let (w, a) = (vec![0u8; Q4_0_BYTES], vec![0u8; Q8_0_BYTES]);
    assert_eq!(k.vec_dot(ty, 32, &w, &a), 0.0);
    let short = std::panic::catch_unwind(|| k.vec_dot(ty, 64, &w, &a));
    assert!(short.is_err());
    let mut out = [0f32; 2];
    let rows = std::panic::catch_unwind(move || k.vec_dot_rows(ty, 32, &w, 18, &a, &mut out));
    assert!(rows.is_err());
    vec_dot_rows(ty, 32, &[], 18, &[], &mut []); // nothing to do, nothing checked
}
