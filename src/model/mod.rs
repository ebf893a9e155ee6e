//! The decoder-only transformer forward pass (llama and qwen2 families).
//!
//! Per layer: RMS norm, Q/K/V projections (+ bias for qwen2), RoPE, append K/V to the
//! per-head cache, grouped-query attention, output projection and residual; RMS norm,
//! SwiGLU feed-forward and residual. Then the final norm and the output projection (tied to
//! the token embedding when the file has no `output.weight`). Prompt tokens go through in
//! batches (`UBATCH`); decoding is a batch of one.

pub mod config;
pub mod hook;
pub mod matmul;
pub mod ops;
pub mod weights;

use crate::attention;
use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::kv_cache::{KvCache, KvDtype};
use crate::quant;
pub use config::ModelConfig;
use hook::LayerObserver;
use matmul::{matmul, matmul_many, matmul_swiglu, Acts, MatJob, MatmulScratch};
use ops::Rope;
use std::path::{Path, PathBuf};
use weights::{Matrix, Weights};

/// Largest number of tokens pushed through the layers at once; bounds workspace memory.
pub const UBATCH: usize = 512;

pub struct Model {
    pub cfg: ModelConfig,
    pub weights: Weights,
    pub path: PathBuf,
    gguf: Gguf,
    rope: Rope,
}

/// Activation buffers for a batch of up to `UBATCH` tokens; reused across calls so that
/// decoding allocates nothing per token.
#[derive(Default)]
pub struct Workspace {
    x: Vec<f32>,      // [n, n_embd] residual stream
    xn: Vec<f32>,     // [n, n_embd] normalised
    q: Vec<f32>,      // [n, q_dim]
    k: Vec<f32>,      // [n, kv_dim]
    v: Vec<f32>,      // [n, kv_dim]
    attn: Vec<f32>,   // [n, q_dim]
    proj: Vec<f32>,   // [n, n_embd]
    gate: Vec<f32>,   // [n, n_ff]
    logits: Vec<f32>, // [n, vocab]
    positions: Vec<u32>,
    acts: Acts,
    mm: MatmulScratch,
}

impl Workspace {
    /// Matrix products in f32 on dequantised weights (evaluation; see `matmul`).
    pub fn set_exact(&mut self, exact: bool) {
        self.acts.set_exact(exact);
    }
}

impl Model {
    pub fn load(path: &Path) -> Result<Model> {
        let gguf = Gguf::open(path)?;
        let cfg = ModelConfig::from_gguf(&gguf)?;
        let weights = Weights::load(&gguf, &cfg)?;
        let rope = Rope::new(cfg.rope_style, cfg.head_dim, cfg.rope_dims, cfg.rope_theta);
        Ok(Model {
            cfg,
            weights,
            path: path.to_path_buf(),
            gguf,
            rope,
        })
    }

    /// The GGUF file (metadata for the tokenizer and chat template).
    pub fn gguf(&self) -> &Gguf {
        &self.gguf
    }

    /// An empty cache for this model.
    pub fn new_cache(&self, dtype: KvDtype) -> KvCache {
        KvCache::new(
            self.cfg.n_layers,
            self.cfg.n_kv_heads,
            self.cfg.head_dim,
            dtype,
        )
    }

    fn bytes(&self, m: &Matrix) -> &[u8] {
        self.gguf.tensor_bytes(&m.tensor)
    }

    /// Checks that `tokens` are valid ids and fit after what `cache` holds.
    pub fn check_tokens(&self, tokens: &[u32], cache: &KvCache) -> Result<()> {
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            return Err(Error::InvalidSetting(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.cfg.vocab_size
            )));
        }
        let total = cache.seq_len() + tokens.len();
        if total > self.cfg.n_ctx {
            return Err(Error::ContextOverflow {
                tokens: total,
                ctx: self.cfg.n_ctx,
            });
        }
        Ok(())
    }

    /// Runs `tokens` through the model after what `cache` holds, appending them to it.
    /// For every token index `i >= logits_from`, calls `on_logits(i, logits)`.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        ws: &mut Workspace,
        logits_from: usize,
        on_logits: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<()> {
        self.forward_observed(tokens, cache, ws, logits_from, on_logits, None)
    }

    /// [`Model::forward`] with an observer called after each layer's attention
    /// (see [`hook::LayerObserver`]).
    pub fn forward_observed(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        ws: &mut Workspace,
        logits_from: usize,
        on_logits: &mut dyn FnMut(usize, &[f32]),
        mut observer: Option<&mut dyn LayerObserver>,
    ) -> Result<()> {
        self.check_tokens(tokens, cache)?;
        cache.reserve(tokens.len());
        for (b, chunk) in tokens.chunks(UBATCH).enumerate() {
            let first = b * UBATCH;
            let from = logits_from.saturating_sub(first).min(chunk.len());
            let obs = observer
                .as_mut()
                .map(|o| &mut **o as &mut dyn LayerObserver);
            self.forward_ubatch(chunk, cache, ws, from, obs);
            let vocab = self.cfg.vocab_size;
            for (i, row) in ws.logits.chunks_exact(vocab).enumerate() {
                on_logits(first + from + i, row);
            }
        }
        Ok(())
    }

    /// Prefill: runs the prompt and returns the logits of its last token.
    pub fn prefill(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        ws: &mut Workspace,
    ) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(Error::InvalidSetting("the prompt is empty".into()));
        }
        let mut last = Vec::new();
        self.forward(tokens, cache, ws, tokens.len() - 1, &mut |_, l| {
            last = l.to_vec()
        })?;
        Ok(last)
    }

    /// Decode: runs one token and returns its logits (valid until the next call).
    pub fn decode<'w>(
        &self,
        token: u32,
        cache: &mut KvCache,
        ws: &'w mut Workspace,
    ) -> Result<&'w [f32]> {
        self.decode_observed(token, cache, ws, None)
    }

    /// [`Model::decode`] with a layer observer.
    pub fn decode_observed<'w>(
        &self,
        token: u32,
        cache: &mut KvCache,
        ws: &'w mut Workspace,
        observer: Option<&mut dyn LayerObserver>,
    ) -> Result<&'w [f32]> {
        self.forward_observed(&[token], cache, ws, 0, &mut |_, _| {}, observer)?;
        Ok(&ws.logits)
    }

    /// One batch of at most `UBATCH` tokens; leaves the logits of rows `from..` in `ws.logits`.
    fn forward_ubatch(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        ws: &mut Workspace,
        from: usize,
        mut observer: Option<&mut dyn LayerObserver>,
    ) {
        let c = &self.cfg;
        let w = &self.weights;
        let n = tokens.len();
        let p0 = cache.seq_len();
        let mut positions = std::mem::take(&mut ws.positions);
        positions.clear();
        positions.extend((p0..p0 + n).map(|p| p as u32));
        let (d, qd, kvd, hd) = (c.n_embd, c.q_dim(), c.kv_dim(), c.head_dim);
        ws.x.resize(n * d, 0.0);
        ws.xn.resize(n * d, 0.0);
        ws.q.resize(n * qd, 0.0);
        ws.k.resize(n * kvd, 0.0);
        ws.v.resize(n * kvd, 0.0);
        ws.attn.resize(n * qd, 0.0);
        ws.proj.resize(n * d, 0.0);
        ws.gate.resize(n * c.n_ff, 0.0);

        let embd = self.bytes(&w.token_embd);
        let erb = w.token_embd.row_bytes;
        for (row, &t) in ws.x.chunks_exact_mut(d).zip(tokens) {
            let t = t as usize;
            quant::dequantize_row(w.token_embd.ty, &embd[t * erb..(t + 1) * erb], row);
        }

        for (l, lw) in w.layers.iter().enumerate() {
            // Attention block.
            ops::rms_norm(&ws.x, &lw.attn_norm, c.rms_eps, &mut ws.xn);
            ws.acts.reset(n, d);
            let qkv = [
                (&lw.wq, &mut ws.q),
                (&lw.wk, &mut ws.k),
                (&lw.wv, &mut ws.v),
            ];
            let mut jobs = qkv.map(|(w, y)| MatJob {
                w,
                bytes: self.bytes(w),
                y,
            });
            matmul_many(&mut jobs, &ws.xn, &mut ws.acts, &mut ws.mm);
            for (bias, out) in [
                (&lw.bq, &mut ws.q),
                (&lw.bk, &mut ws.k),
                (&lw.bv, &mut ws.v),
            ] {
                if let Some(b) = bias {
                    ops::add_bias(out, b);
                }
            }
            for (i, &pos) in positions.iter().enumerate() {
                self.rope
                    .apply(&mut ws.q[i * qd..(i + 1) * qd], pos as usize);
                self.rope
                    .apply(&mut ws.k[i * kvd..(i + 1) * kvd], pos as usize);
            }
            let heads = cache.layer_mut(l);
            for (i, &pos) in positions.iter().enumerate() {
                for (h, head) in heads.iter_mut().enumerate() {
                    let r = i * kvd + h * hd..i * kvd + (h + 1) * hd;
                    head.push(pos, &ws.k[r.clone()], &ws.v[r]);
                }
            }
            let heads = cache.layer(l);
            // KV policy hook: probabilities only for decode steps whose observer asks.
            let want_probs = n == 1 && observer.as_ref().is_some_and(|o| o.wants_probs(l));
            let mut probs: Vec<Vec<f32>> = Vec::new(); // [n_kv_heads][group * len]
            if n == 1 {
                let probs_out = want_probs.then_some(&mut probs);
                attention::attend_one(heads, &ws.q, positions[0], hd, &mut ws.attn, probs_out);
            } else {
                attention::attend_batch(heads, &ws.q, &positions, c.n_heads, hd, &mut ws.attn);
            }
            if let Some(o) = observer.as_mut() {
                let probs = want_probs.then_some(&probs[..]);
                o.after_attention(l, &ws.q, &positions, cache.layer_mut(l), probs);
            }
            ws.acts.reset(n, qd);
            matmul(
                &lw.wo,
                self.bytes(&lw.wo),
                &ws.attn,
                &mut ws.acts,
                &mut ws.proj,
                &mut ws.mm,
            );
            ops::add_in_place(&mut ws.x, &ws.proj);

            // Feed-forward block.
            ops::rms_norm(&ws.x, &lw.ffn_norm, c.rms_eps, &mut ws.xn);
            ws.acts.reset(n, d);
            // gate = silu(xn gate^T) * (xn up^T), both products in one step.
            matmul_swiglu(
                &lw.w_gate,
                self.bytes(&lw.w_gate),
                &lw.w_up,
                self.bytes(&lw.w_up),
                &ws.xn,
                &mut ws.acts,
                &mut ws.gate,
                &mut ws.mm,
            );
            ws.acts.reset(n, c.n_ff);
            matmul(
                &lw.w_down,
                self.bytes(&lw.w_down),
                &ws.gate,
                &mut ws.acts,
                &mut ws.proj,
                &mut ws.mm,
            );
            ops::add_in_place(&mut ws.x, &ws.proj);
        }
        cache.advance(n);
        ws.positions = positions;

        // Output: only the rows whose logits are wanted.
        let m = n - from;
        ws.logits.resize(m * c.vocab_size, 0.0);
        if m == 0 {
            return;
        }
        ops::rms_norm(
            &ws.x[from * d..],
            &w.output_norm,
            c.rms_eps,
            &mut ws.xn[..m * d],
        );
        ws.acts.reset(m, d);
        matmul(
            &w.output,
            self.bytes(&w.output),
            &ws.xn[..m * d],
            &mut ws.acts,
            &mut ws.logits,
            &mut ws.mm,
        );
    }
}
