//! Byte layouts of the GGUF blocks and of the activation blocks, as ggml stores them: packed,
//! little-endian, no padding. Kernels read blocks straight out of the mapped file, so every
//! offset here is a wire format, not a choice.
//!
//! Naming: `QK*` are elements per block, `*_BYTES` bytes per block, `*_OFF_*` field offsets.

/// Elements per block of the 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, IQ4_NL).
pub const QK: usize = 32;
/// Elements per super-block of the K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K).
pub const QK_K: usize = 256;

/// Q4_0, 32 weights in 18 bytes: `[d: f16][qs: 16 B]`.
/// `qs[j] & 0xF` is element `j`, `qs[j] >> 4` is element `j + 16`; weight = d * (q - 8).
pub const Q4_0_BYTES: usize = 18;

/// Q4_1, 32 weights in 20 bytes: `[d: f16][m: f16][qs: 16 B]`.
/// Nibble order as Q4_0; weight = d * q + m.
pub const Q4_1_BYTES: usize = 20;

/// Q5_0, 32 weights in 22 bytes: `[d: f16][qh: u32 LE][qs: 16 B]`.
/// Low four bits as Q4_0; bit `i` of `qh` is the fifth bit of element `i`; weight = d * (q - 16).
pub const Q5_0_BYTES: usize = 22;

/// Q5_1, 32 weights in 24 bytes: `[d: f16][m: f16][qh: u32 LE][qs: 16 B]` (ggml's
/// `block_q5_1`). Low four bits as Q4_0, fifth bits as Q5_0; weight = d * q + m, q in 0..=31.
pub const Q5_1_BYTES: usize = 24;

/// IQ4_NL, 32 weights in 18 bytes: `[d: f16][qs: 16 B]` (ggml's `block_iq4_nl`). Nibble order
/// as Q4_0; a nibble picks one of the 16 levels of [`KVALUES_IQ4NL`]; weight = d * level.
pub const IQ4_NL_BYTES: usize = 18;
/// IQ4_NL's non-linear levels (ggml's `kvalues_iq4nl`): closer together near zero.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Q8_0, 32 values in 34 bytes: `[d: f16][qs: 32 x i8]`; value = d * q.
/// Also the activation format for Q4_0, Q5_0, Q8_0 and IQ4_NL weights.
pub const Q8_0_BYTES: usize = 34;

/// Q8_1 (activations for Q4_1 and Q5_1), 32 values in 36 bytes: `[d: f16][s: f16][qs: 32 x i8]`,
/// where `s = d * sum(qs)` lets the dot product fold in Q4_1's / Q5_1's offset `m` with one multiply.
pub const Q8_1_BYTES: usize = 36;

/// Q2_K, 256 weights in 84 bytes: `[scales: 16 B][qs: 64 B][d: f16][dmin: f16]` (ggml's
/// `block_q2_K`). Sixteen groups of 16 elements: `scales[g]` holds group `g`'s 4-bit scale
/// `sc` in its low nibble and 4-bit min `m` in its high nibble. `qs` is two 32-byte halves;
/// element `128h + 32j + l` (j in 0..4, l in 0..32) is bits `2j..2j + 2` of `qs[32h + l]`,
/// so element `e` is in group `e / 16`. q in 0..=3; weight = d * sc * q - dmin * m.
pub const Q2_K_BYTES: usize = 84;
pub const Q2_K_OFF_QS: usize = 16;
pub const Q2_K_OFF_D: usize = 80;
pub const Q2_K_OFF_DMIN: usize = 82;

/// Q3_K, 256 weights in 110 bytes: `[hmask: 32 B][qs: 64 B][scales: 12 B][d: f16]` (ggml's
/// `block_q3_K`). Sixteen groups of 16 elements, each with a 6-bit scale stored + 32 (see
/// [`q3k_scale`]). Element `e = 128h + 32j + l` (j in 0..4, l in 0..32) has its low two bits
/// where Q2_K has them (bits `2j..2j + 2` of `qs[32h + l]`) and its third bit at bit
/// `4h + j = e / 32` of `hmask[l]`; q = low bits, minus 4 when that bit is clear (-4..=3).
/// weight = d * (scale - 32) * q.
pub const Q3_K_BYTES: usize = 110;
pub const Q3_K_OFF_QS: usize = 32;
pub const Q3_K_OFF_SCALES: usize = 96;
pub const Q3_K_OFF_D: usize = 108;

/// Q4_K, 256 weights in 144 bytes: `[d: f16][dmin: f16][scales: 12 B][qs: 128 B]`.
/// Eight sub-blocks of 32, each with a 6-bit scale `sc` and 6-bit min `m` packed into `scales`
/// (see [`q4k_scale_min`]). `qs` is four 32-byte chunks; chunk `c` holds sub-block `2c` in its
/// low nibbles and sub-block `2c + 1` in its high nibbles. weight = d * sc * q - dmin * m.
pub const Q4_K_BYTES: usize = 144;
pub const Q4_K_OFF_SCALES: usize = 4;
pub const Q4_K_OFF_QS: usize = 16;

/// Q5_K, 256 weights in 176 bytes: `[d: f16][dmin: f16][scales: 12 B][qh: 32 B][qs: 128 B]`
/// (ggml's `block_q5_K`). Scales and mins packed as Q4_K's ([`q4k_scales_mins`]); `qs` as
/// Q4_K's: chunk `c` (32 bytes) holds sub-block `2c` in its low nibbles and `2c + 1` in its
/// high nibbles. The fifth bit of element `64c + l` is bit `2c` of `qh[l]`, of element
/// `64c + 32 + l` bit `2c + 1` of `qh[l]` (ggml `dequantize_row_q5_K`: masks `u1 = 1 << 2c`,
/// `u2 = 2 << 2c`). q in 0..=31; weight = d * sc * q - dmin * m.
pub const Q5_K_BYTES: usize = 176;
pub const Q5_K_OFF_SCALES: usize = 4;
pub const Q5_K_OFF_QH: usize = 16;
pub const Q5_K_OFF_QS: usize = 48;

/// Q6_K, 256 weights in 210 bytes: `[ql: 128 B][qh: 64 B][scales: 16 x i8][d: f16]`.
/// Two halves of 128 elements, each using 64 B of `ql` and 32 B of `qh`. Within a half, for
/// `l` in 0..32: element `l` = ql[l] low | qh[l] bits 0-1, `l + 32` = ql[l + 32] low |
/// qh[l] bits 2-3, `l + 64` = ql[l] high | qh[l] bits 4-5, `l + 96` = ql[l + 32] high |
/// qh[l] bits 6-7 (ql part is the low four bits of q, qh part the top two).
/// Element `e` uses scale `scales[e / 16]`; weight = d * scale * (q - 32).
pub const Q6_K_BYTES: usize = 210;
pub const Q6_K_OFF_QH: usize = 128;
pub const Q6_K_OFF_SCALES: usize = 192;
pub const Q6_K_OFF_D: usize = 208;

/// Q8_K (activations for the K-quants), 256 values in 292 bytes:
/// `[d: f32][qs: 256 x i8][bsums: 16 x i16]`, `bsums[k]` = sum of `qs[16k..16k + 16]`
/// (lets the K-quant dots apply mins and offsets per 16 elements without touching `qs`).
pub const Q8_K_BYTES: usize = 292;
pub const Q8_K_OFF_QS: usize = 4;
pub const Q8_K_OFF_BSUMS: usize = 260;

#[inline(always)]
pub fn read_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

#[inline(always)]
pub fn read_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[inline(always)]
pub fn read_f16(b: &[u8], off: usize) -> f32 {
    half::f16::from_bits(read_u16(b, off)).to_f32()
}

#[inline(always)]
pub fn read_f32(b: &[u8], off: usize) -> f32 {
    f32::from_bits(read_u32(b, off))
}

/// The bfloat16 at `off`: the top half of an f32.
#[inline(always)]
pub fn read_bf16(b: &[u8], off: usize) -> f32 {
    f32::from_bits((read_u16(b, off) as u32) << 16)
}

#[inline(always)]
pub fn write_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
}

/// Sum of the Q8_K block's 16-element group `k`.
#[inline(always)]
pub fn q8k_bsum(b: &[u8], k: usize) -> i32 {
    read_u16(b, Q8_K_OFF_BSUMS + 2 * k) as i16 as i32
}

/// Scale and min of Q4_K sub-block `j` (0..8) from the 12 packed bytes `s`.
/// Bytes 0-3: low 6 bits = scales 0-3, top 2 bits = high bits of scales 4-7.
/// Bytes 4-7: low 6 bits = mins 0-3, top 2 bits = high bits of mins 4-7.
/// Bytes 8-11: low nibble = low 4 bits of scales 4-7, high nibble = low 4 bits of mins 4-7.
#[inline(always)]
pub fn q4k_scale_min(s: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Scale `j` (0..16) of a Q3_K block as stored (0..=63, i.e. scale + 32) from its 12 packed
/// bytes `s`: the low four bits are the low (j < 8) or high (j >= 8) nibble of `s[j % 8]`,
/// the top two bits are bits `2 (j / 4)..2 (j / 4) + 2` of `s[8 + j % 4]`.
#[inline(always)]
pub fn q3k_scale(s: &[u8], j: usize) -> u8 {
    let lo = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
    let hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    lo | hi << 4
}

/// All 16 scales of a Q3_K block, minus 32 (-32..=31): [`q3k_scale`] for each `j`, done
/// four bytes at a time.
#[inline(always)]
pub fn q3k_scales(s: &[u8]) -> [i8; 16] {
    let (u0, u1, u2) = (read_u32(s, 0), read_u32(s, 4), read_u32(s, 8));
    let (m4, m2) = (0x0F0F_0F0Fu32, 0x0303_0303u32);
    let words = [
        (u0 & m4) | (u2 & m2) << 4,
        (u1 & m4) | ((u2 >> 2) & m2) << 4,
        ((u0 >> 4) & m4) | ((u2 >> 4) & m2) << 4,
        ((u1 >> 4) & m4) | ((u2 >> 6) & m2) << 4,
    ];
    let mut out = [0i8; 16];
    for (o, w) in out.chunks_exact_mut(4).zip(words) {
        for (o, b) in o.iter_mut().zip(w.to_le_bytes()) {
            *o = b as i8 - 32;
        }
    }
    out
}

/// All eight (scale, min) pairs of a Q4_K block, unpacked: the same as [`q4k_scale_min`]
/// for each `j`, done four bytes at a time.
#[inline(always)]
pub fn q4k_scales_mins(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (u0, u1, u2) = (read_u32(s, 0), read_u32(s, 4), read_u32(s, 8));
    let (m6, m4, m2) = (0x3F3F_3F3Fu32, 0x0F0F_0F0Fu32, 0x0303_0303u32);
    let sc_hi = (u2 & m4) | ((u0 >> 6) & m2) << 4;
    let mn_hi = ((u2 >> 4) & m4) | ((u1 >> 6) & m2) << 4;
    let join = |lo: u32, hi: u32| (lo as u64 | (hi as u64) << 32).to_le_bytes();
    (join(u0 & m6, sc_hi), join(u1 & m6, mn_hi))
}
