//! A hook into the forward pass for KV-cache policies (FastGen profiling and eviction).
//!
//! The forward pass calls the observer once per layer, right after that layer's attention,
//! while the batch's query rows are at hand. Without an observer the forward pass does no
//! extra work.

use crate::kv_cache::HeadCache;

pub trait LayerObserver {
    /// Asked before a decode step's attention (batch of one token): should `attend_one`
    /// return this layer's attention probabilities? Prefill batches never compute them.
    fn wants_probs(&self, layer: usize) -> bool;

    /// Called after `layer`'s attention with the batch's query rows `q`
    /// `[n, n_heads * head_dim]` (after RoPE) at `positions`, the layer's KV heads (the
    /// batch's keys and values already appended), and, when `wants_probs` said so, the
    /// probabilities per KV head `[group, len]` over that head's slots. The observer may
    /// evict from `heads`: the layer has finished with them for this batch.
    fn after_attention(
        &mut self,
        layer: usize,
        q: &[f32],
        positions: &[u32],
        heads: &mut [HeadCache],
        probs: Option<&[Vec<f32>]>,
    );
}
