//! Scaled dot-product attention over the per-(layer, KV head) cache buffers.
//!
//! Grouped-query attention: the `group` query heads that share a KV head are handled in one
//! pass over that head's keys and values. Any head may hold any subset of positions (slots
//! are in increasing position order), so the causal mask is "slots up to `visible(pos)`".
//!
//! Decode ([`attend_one`]) splits each head's slots into chunks that the threads of the pool
//! take in parallel (split-K, as flash-decoding): a chunk yields its scores, their local
//! maximum and exp-sum, and its part of the output; the parts are merged with the global
//! maximum. On AVX-512 the keys and values are read as stored (f16 or f32) and converted in
//! registers; on AVX2 the portable chunk is compiled for AVX2; elsewhere it runs as plain
//! Rust.
//!
//! Files: `decode.rs` (split-K decode), `prefill.rs` (tiled prefill), `reference.rs` (the
//! portable reference the others are tested against), `x86.rs` (AVX-512 kernels).
//!
//! Prefill ([`attend_batch`]) works in tiles: a block of query rows against a block of keys
//! (converted to f32 once per tile, keys transposed so scores are plain vector FMAs), with an
//! online softmax carried across key blocks (flash attention).

use crate::kv_cache::{HeadCache, HeadView};
use crate::model::ops::{exp_fast, softmax};
use crate::pool::{self, Chunks};
use std::cell::RefCell;

mod decode;
mod prefill;
mod reference;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use decode::attend_one;
pub use prefill::attend_batch;
use reference::*;

/// Dot product written with eight independent lanes so that it vectorises.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `acc += w * v`.
#[inline]
fn axpy(acc: &mut [f32], w: f32, v: &[f32]) {
    for (a, &x) in acc.iter_mut().zip(v) {
        *a += w * x;
    }
}

/// A raw pointer that threads of one pool step share to write disjoint parts of a buffer.
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: only used to write disjoint ranges from the threads of one pool step.
unsafe impl Sync for SyncPtr {}
unsafe impl Send for SyncPtr {}

impl SyncPtr {
    /// The pointer (a method, so that closures capture the `Sync` wrapper, not the field).
    fn ptr(&self) -> *mut f32 {
        self.0
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    pub use crate::cpu::{avx2 as has_avx2, avx512 as has_avx512};
    use crate::kv_cache::HeadView;
    pub fn usable(_: usize) -> bool {
        false
    }
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn decode_chunk(
        _: HeadView,
        _: &[f32],
        _: usize,
        _: usize,
        _: usize,
        _: *mut f32,
        _: usize,
        _: &mut [f32],
    ) {
        unreachable!()
    }
}
