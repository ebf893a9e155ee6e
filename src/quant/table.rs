//! A kernel set as a table of function pointers, one entry per tensor type, and the checked
//! entry points that call through it. Each instruction set (`scalar`, `avx2`, `avx512`) fills
//! one; `dispatch` picks the table in use.

use super::GgmlType;

/// Entries per kernel table: one per [`GgmlType`], indexed by `GgmlType as usize`.
pub(crate) const N_TYPES: usize = GgmlType::ALL.len();

/// `(n, weight row, activation row) -> dot`. Unsafe because SIMD kernels require their CPU
/// features and read whole blocks through raw pointers; [`Kernels`] checks both before calling.
pub(crate) type DotFn = unsafe fn(usize, &[u8], &[u8]) -> f32;
/// `(x, dst)`: quantise activations; same preconditions as [`DotFn`].
pub(crate) type QuantFn = unsafe fn(&[f32], &mut [u8]);

/// Shapes of the multi-row kernels: decode runs `ROWS_R` weight rows against one activation
/// row; prefill tiles run `TILE_R` weight rows against `TILE_A` activation rows. Chosen by
/// measurement on AVX-512 (examples/quant_bench.rs, 576 x 1536): 4 rows beat 2 for decode
/// (shared activation loads, more independent chains); a 2 x 4 tile beat 1 x 4 for the
/// 32-element types and tied for the K-quants (larger tiles run out of registers).
pub(crate) const ROWS_R: usize = 4;
pub(crate) const TILE_R: usize = 2;
pub(crate) const TILE_A: usize = 4;
/// `out[a][r]` of a tile.
pub(crate) type Tile = [[f32; TILE_R]; TILE_A];
/// `(n, ROWS_R weight rows, activation row) -> dots`; rows must hold `n` elements' blocks.
pub(crate) type RowsFn = unsafe fn(usize, [*const u8; ROWS_R], *const u8) -> [f32; ROWS_R];
/// `(n, TILE_R weight rows, TILE_A activation rows) -> dots`.
pub(crate) type TileFn = unsafe fn(usize, [*const u8; TILE_R], [*const u8; TILE_A]) -> Tile;

/// The kernels of one instruction set. Values exist only as statics handed out by
/// [`kernels`] / [`supported_kernels`] after checking the CPU, which is what makes calling the
/// function pointers sound.
pub struct Kernels {
    pub name: &'static str,
    /// Indexed by `GgmlType as usize`.
    pub(crate) dot: [DotFn; N_TYPES],
    /// Indexed by `GgmlType as usize`: the activation quantiser for that weight type.
    pub(crate) quant: [QuantFn; N_TYPES],
    /// Multi-row kernels where the instruction set has them, by `GgmlType as usize`.
    pub(crate) rows: [Option<RowsFn>; N_TYPES],
    pub(crate) tile: [Option<TileFn>; N_TYPES],
}

impl Kernels {
    /// See [`super::vec_dot`].
    #[inline]
    pub fn vec_dot(&self, ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f32 {
        check_lens(ty, n, w.len(), a.len());
        // SAFETY: `self` only exists for a supported CPU; lengths checked above.
        unsafe { (self.dot[ty as usize])(n, w, a) }
    }

    /// See [`super::quantize_acts`].
    pub fn quantize_acts(&self, ty: GgmlType, x: &[f32], dst: &mut [u8]) {
        assert!(
            x.len().is_multiple_of(ty.block_len()),
            "{}: ragged row",
            ty.name()
        );
        assert!(
            dst.len() >= ty.act_row_bytes(x.len()),
            "activation buffer too small"
        );
        // SAFETY: `self` only exists for a supported CPU; lengths checked above.
        unsafe { (self.quant[ty as usize])(x, dst) }
    }

    /// See [`super::vec_dot_rows`].
    pub fn vec_dot_rows(
        &self,
        ty: GgmlType,
        n: usize,
        w_rows: &[u8],
        row_bytes: usize,
        a: &[u8],
        out: &mut [f32],
    ) {
        if out.is_empty() {
            return;
        }
        let nb = n / ty.block_len() * ty.block_bytes();
        assert!(row_bytes >= nb && w_rows.len() >= span(row_bytes, out.len(), nb));
        check_lens(ty, n, nb, a.len());
        let dot = self.dot[ty as usize];
        let mut done = 0;
        if let Some(rows) = self.rows[ty as usize] {
            for (g, o) in out.chunks_exact_mut(ROWS_R).enumerate() {
                let w: [*const u8; ROWS_R] =
                    std::array::from_fn(|j| w_rows[(g * ROWS_R + j) * row_bytes..].as_ptr());
                // SAFETY: supported CPU; every row holds `nb` bytes (checked above).
                o.copy_from_slice(&unsafe { rows(n, w, a.as_ptr()) });
                done += ROWS_R;
            }
        }
        for (r, o) in out.iter_mut().enumerate().skip(done) {
            let w = &w_rows[r * row_bytes..];
            // SAFETY: supported CPU; every row holds `nb` bytes (checked above).
            *o = unsafe { dot(n, w, a) };
        }
    }

    /// See [`super::dot_tile`]. Weight rows outermost: a row stays in L1 while the
    /// (smaller) activation rows stream past it.
    #[allow(clippy::too_many_arguments)]
    pub fn dot_tile(
        &self,
        ty: GgmlType,
        n: usize,
        w_rows: &[u8],
        row_bytes: usize,
        n_rows: usize,
        acts: &[u8],
        act_row_bytes: usize,
        n_acts: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        if n_rows == 0 || n_acts == 0 {
            return;
        }
        let nb = n / ty.block_len() * ty.block_bytes();
        let na = ty.act_row_bytes(n);
        assert!(row_bytes >= nb && w_rows.len() >= span(row_bytes, n_rows, nb));
        assert!(act_row_bytes >= na && acts.len() >= span(act_row_bytes, n_acts, na));
        assert!(out_stride >= n_rows && out.len() >= span(out_stride, n_acts, n_rows));
        check_lens(ty, n, nb, na);
        let dot = self.dot[ty as usize];
        let (mut rows_done, mut acts_done) = (0, 0);
        if let Some(tile) = self.tile[ty as usize] {
            (rows_done, acts_done) = (n_rows / TILE_R * TILE_R, n_acts / TILE_A * TILE_A);
            for r in (0..rows_done).step_by(TILE_R) {
                let w = std::array::from_fn(|j| w_rows[(r + j) * row_bytes..].as_ptr());
                for a in (0..acts_done).step_by(TILE_A) {
                    let x = std::array::from_fn(|k| acts[(a + k) * act_row_bytes..].as_ptr());
                    // SAFETY: supported CPU; lengths checked above.
                    let t = unsafe { tile(n, w, x) };
                    for (k, t) in t.iter().enumerate() {
                        out[(a + k) * out_stride + r..][..TILE_R].copy_from_slice(t);
                    }
                }
            }
        }
        // What the tiles left: the last rows against all activations, and the last
        // activations against the tiled rows.
        for r in 0..n_rows {
            let w = &w_rows[r * row_bytes..];
            let first_act = if r < rows_done { acts_done } else { 0 };
            for a in first_act..n_acts {
                let act = &acts[a * act_row_bytes..];
                // SAFETY: supported CPU; lengths checked above.
                out[a * out_stride + r] = unsafe { dot(n, w, act) };
            }
        }
    }
}

/// Length needed for `count >= 1` items `stride` apart, the last `last` long. Saturates, so
/// absurd sizes fail the length checks instead of wrapping past them.
fn span(stride: usize, count: usize, last: usize) -> usize {
    stride.saturating_mul(count - 1).saturating_add(last)
}

/// The SIMD kernels read whole blocks through raw pointers, so a short slice would be an
/// out-of-bounds read: check (cheaply, once per call) rather than trust.
#[inline]
fn check_lens(ty: GgmlType, n: usize, w_len: usize, a_len: usize) {
    debug_assert!(
        n.is_multiple_of(ty.block_len()),
        "{}: ragged row of {n}",
        ty.name()
    );
    assert!(
        w_len >= n / ty.block_len() * ty.block_bytes() && a_len >= ty.act_row_bytes(n),
        "{}: row slices too short for {n} elements",
        ty.name()
    );
}
