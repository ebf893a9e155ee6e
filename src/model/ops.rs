//! Element-wise and row-wise operations of the forward pass. Rows are `[n, dim]` row-major.

use super::arch::{GatedAct, RopeStyle};

/// `out = x / rms(x) * w` for each row; the mean square is accumulated in f64 as llama.cpp does.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let dim = w.len();
    for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let ss: f64 = xr.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let scale = 1.0 / ((ss / dim as f64) as f32 + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * scale * g;
        }
    }
}

/// [`rms_norm`] in place: each `w.len()`-wide row of `x` (a head, for QK norm).
pub fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let dim = w.len();
    for xr in x.chunks_exact_mut(dim) {
        let ss: f64 = xr.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let scale = 1.0 / ((ss / dim as f64) as f32 + eps).sqrt();
        for (v, &g) in xr.iter_mut().zip(w) {
            *v *= scale * g;
        }
    }
}

/// Adds `bias` to every row of `x`.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// `x += y`.
pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// The gated feed-forward's activation: `gate = act(gate) * up`.
pub fn gated(act: GatedAct, gate: &mut [f32], up: &[f32]) {
    match act {
        GatedAct::Silu => {
            for (g, &u) in gate.iter_mut().zip(up) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
        }
        GatedAct::GeluTanh => {
            for (g, &u) in gate.iter_mut().zip(up) {
                *g = gelu_tanh(*g) * u;
            }
        }
    }
}

/// GELU, tanh approximation, as llama.cpp's CPU backend computes it: `x/2 (1 + tanh(u))`,
/// `u = sqrt(2/pi) (x + 0.044715 x^3)`, looked up in a table indexed by the f16 rounding of
/// `x` and holding f16 results (ggml's `ggml_vec_gelu_f32` with `GGML_GELU_FP16`); 0 below
/// -10 and `x` above 10. Gemma 3 is sensitive enough that computing it exactly in f32 moved
/// parity; the table also spares a `tanh` per element.
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        gelu_table()[half::f16::from_f32(x).to_bits() as usize]
    }
}

/// `gelu(x)` for every f16 `x`, rounded to f16 (index: the f16's bits).
fn gelu_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| {
                let x = half::f16::from_bits(bits).to_f32();
                half::f16::from_f32(gelu_tanh_f32(x)).to_f32()
            })
            .collect()
    })
}

/// The tanh formula in f32.
fn gelu_tanh_f32(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x)).tanh())
}

/// Rotary position embedding tables: `cos/sin[pos][i]` for the `rope_dims / 2` frequencies.
pub struct Rope {
    style: RopeStyle,
    head_dim: usize,
    half: usize,
    /// `freq_scale * theta_base^(-2i / rope_dims) / factor[i]` for each pair `i`.
    inv_freq: Vec<f32>,
}

impl Rope {
    /// Pair `i` turns by `pos * freq_scale * theta^(-2i / rope_dims) / factors[i]`, as
    /// ggml's `ggml_rope_ext` with `freq_factors` and YaRN off (ggml-cpu/ops.cpp,
    /// `ggml_rope_cache_init` and `rope_yarn`: `theta_extrap = pos * theta_scale^i / ff`,
    /// then `theta = freq_scale * theta_extrap`). `factors` has `rope_dims / 2` entries.
    pub fn new(
        style: RopeStyle,
        head_dim: usize,
        rope_dims: usize,
        theta: f32,
        freq_scale: f32,
        factors: Option<&[f32]>,
    ) -> Rope {
        let half = rope_dims / 2;
        let inv_freq = (0..half)
            .map(|i| {
                let f = (theta as f64).powf(-2.0 * i as f64 / rope_dims as f64);
                let ff = factors.map_or(1.0, |ff| ff[i] as f64);
                (freq_scale as f64 * f / ff) as f32
            })
            .collect();
        Rope {
            style,
            head_dim,
            half,
            inv_freq,
        }
    }

    /// Rotates every head of one token's `[n_heads, head_dim]` vector to position `pos`.
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        let half = self.half;
        // The angles depend on the position only: take their sines and cosines once for all
        // heads (a stack table for the usual sizes).
        const TABLE: usize = 128;
        let mut table = [(0f32, 0f32); TABLE];
        let mut heap = Vec::new();
        let sc: &mut [(f32, f32)] = if half <= TABLE {
            &mut table[..half]
        } else {
            heap.resize(half, (0.0, 0.0));
            &mut heap
        };
        for (t, &f) in sc.iter_mut().zip(&self.inv_freq) {
            *t = (pos as f32 * f).sin_cos();
        }
        for head in x.chunks_exact_mut(self.head_dim) {
            for (i, &(sin, cos)) in sc.iter().enumerate() {
                let (a, b) = match self.style {
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                    RopeStyle::Neox => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos - x1 * sin;
                head[b] = x0 * sin + x1 * cos;
            }
        }
    }
}

/// `e^x` to about 2 ulp for `x` in [-87, 88] (clamped outside): the one exp of the attention
/// kernels and the FastGen profiler (AVX-512's `attention::x86::exp16` is its 16-lane form).
/// `2^n e^r`, with `n` the nearest integer to `x log2 e` (rounded by adding 1.5 * 2^23, so
/// that loops over it vectorise even without SSE4.1's `round`), `r = x - n ln 2` in two parts
/// (`|r| <= ln2 / 2`), and `e^r` by a degree-6 polynomial.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    // n as an integer, read from t's mantissa (a float-to-int `as` would saturate-check).
    let k = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    p * f32::from_bits(((k + 127) << 23) as u32)
}

/// Softmax of one row with [`exp_fast`] and an f32 sum in 8 lanes (so that it vectorises):
/// the FastGen profiler's probabilities, within about 1e-6 of [`softmax`]'s; recovery needs
/// no more.
#[inline(always)]
pub fn softmax_fast(row: &mut [f32]) {
    let mut mx = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            mx[i] = mx[i].max(c[i]);
        }
    }
    let mut max = f32::NEG_INFINITY;
    for &v in chunks.remainder().iter().chain(&mx) {
        max = max.max(v);
    }
    let mut acc = [0.0f32; 8];
    let mut chunks = row.chunks_exact_mut(8);
    for c in &mut chunks {
        for i in 0..8 {
            c[i] = exp_fast(c[i] - max);
            acc[i] += c[i];
        }
    }
    let mut sum: f32 = 0.0;
    for v in chunks.into_remainder() {
        *v = exp_fast(*v - max);
        sum += *v;
    }
    for a in acc {
        sum += a;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// In-place softmax of one row (std's exp, an f64 sum): the reference path's.
pub fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// Whether every value is finite (no NaN, no infinity). One multiply-add per value in eight
/// independent lanes, which the compiler vectorises.
pub fn all_finite(x: &[f32]) -> bool {
    // v * 0 is 0 for a finite v and NaN for NaN or an infinity; NaN survives the sums.
    let mut lanes = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let mut probe: f32 = chunks.remainder().iter().map(|&v| v * 0.0).sum();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v * 0.0;
        }
    }
    probe += lanes.iter().sum::<f32>();
    probe == 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_fast_is_close_to_exp() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp_fast(x), x.exp());
            assert!(((a - b) / b).abs() < 4e-7, "{x}: {a} vs {b}");
            x += 0.0137;
        }
        assert_eq!(exp_fast(0.0), 1.0);
        assert!(exp_fast(f32::NEG_INFINITY) < 1e-37);
        assert!(exp_fast(-1000.0) < 1e-37);
    }

    #[test]
    fn gelu_tanh_is_the_tanh_formula_rounded_to_f16() {
        let mut x = -30.0f32;
        while x < 30.0 {
            let u = 0.797_884_6 * (x as f64 + 0.044_715 * (x as f64).powi(3));
            let want = 0.5 * x as f64 * (1.0 + u.tanh());
            let got = gelu_tanh(x) as f64;
            // Two f16 roundings (input and output): a few parts in a thousand, plus the
            // input's rounding near the minimum around x = -0.75.
            let tol = 2e-3 * want.abs() + 1e-3 * (x.abs() as f64).min(1.0);
            assert!((got - want).abs() <= tol, "{x}: {got} vs {want}");
            x += 0.0173;
        }
        assert_eq!(gelu_tanh(0.0), 0.0);
        assert_eq!(gelu_tanh(-10.5), 0.0);
        assert_eq!(gelu_tanh(200.0), 200.0);
        // The table's rounding: a value that is exact in f16 maps to the f16 of its GELU.
        let want = half::f16::from_f32(gelu_tanh_f32(1.5)).to_f32();
        assert_eq!(gelu_tanh(1.5), want);
    }

    #[test]
    fn softmax_fast_matches_softmax() {
        let mut row: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 23) as f32 * 0.9 - 9.0)
            .collect();
        let mut exact = row.clone();
        softmax(&mut exact);
        softmax_fast(&mut row);
        for (a, b) in row.iter().zip(&exact) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn rms_norm_of_constant_row_is_the_weight() {
        let x = [2.0f32; 4];
        let w = [1.0, 2.0, 3.0, 4.0];
        let mut out = [0.0; 4];
        rms_norm(&x, &w, 0.0, &mut out);
        assert_eq!(out, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn rope_rotates_pairs_by_position_times_frequency() {
        // head_dim 4, theta 100: frequencies 1 and 100^(-1/2) = 0.1.
        let rope = Rope::new(RopeStyle::Neox, 4, 4, 100.0, 1.0, None);
        let mut x = [1.0, 0.0, 0.0, 0.0];
        rope.apply(&mut x, 2);
        // pair (x0, x2) rotated by 2 rad, pair (x1, x3) = (0, 0) stays.
        assert!((x[0] - 2f32.cos()).abs() < 1e-6 && (x[2] - 2f32.sin()).abs() < 1e-6);
        assert_eq!((x[1], x[3]), (0.0, 0.0));
        let rope = Rope::new(RopeStyle::Interleaved, 4, 4, 100.0, 1.0, None);
        let mut x = [0.0, 0.0, 1.0, 0.0];
        rope.apply(&mut x, 10);
        // pair (x2, x3) at frequency 0.1 rotated by 1 rad.
        assert!((x[2] - 1f32.cos()).abs() < 1e-6 && (x[3] - 1f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn rope_divides_frequencies_by_factors_and_scales_positions() {
        // Frequencies 1 and 0.1, factors 2 and 4, positions scaled by 1/2: pos 8 turns pair 0
        // by 8 * 1/2 / 2 = 2 rad and pair 1 by 8 * 1/2 * 0.1 / 4 = 0.1 rad.
        let rope = Rope::new(RopeStyle::Neox, 4, 4, 100.0, 0.5, Some(&[2.0, 4.0]));
        let mut x = [1.0, 1.0, 0.0, 0.0];
        rope.apply(&mut x, 8);
        assert!((x[0] - 2f32.cos()).abs() < 1e-6 && (x[2] - 2f32.sin()).abs() < 1e-6);
        assert!((x[1] - 0.1f32.cos()).abs() < 1e-6 && (x[3] - 0.1f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut r = [1.0, 3.0, 2.0];
        softmax(&mut r);
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(r[1] > r[2] && r[2] > r[0]);
    }
}
