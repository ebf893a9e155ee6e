//! The decoder-only transformer forward pass (the architectures of `arch`).
//!
//! Per layer: RMS norm, Q/K/V projections (+ biases, QK norm where the architecture has
//! them), RoPE (with the file's linear scaling and frequency factors), append K/V to the
//! per-head cache, grouped-query attention (over a sliding window on such layers), output
//! projection, post-norm where the architecture has one, and residual; RMS norm, gated
//! feed-forward (SwiGLU or GeGLU), post-norm, residual. Then the final norm and the output
//! projection (tied to the token embedding when the file has no `output.weight`). What
//! varies is read from the architecture's spec (`arch`) and the per-layer specs of
//! `ModelConfig`. Rows go through in ubatches of at most `UBATCH`: a prompt's tokens, or the
//! new tokens of several sequences together (`forward_batch`), each sequence attending over
//! its own cache.

pub mod arch;
pub mod config;
pub mod hook;
pub mod matmul;
pub mod ops;
pub mod synth;
pub mod weights;

use crate::attention;
use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::kv_cache::{KvCache, KvDtype};
use crate::quant;
use arch::EmbedScale;
pub use config::ModelConfig;
use hook::LayerObserver;
use matmul::{matmul, matmul_gated, matmul_many, Acts, MatJob, MatmulScratch};
use ops::Rope;
use std::ops::Range;
use std::path::{Path, PathBuf};
use weights::{Matrix, Weights};

/// Largest number of tokens pushed through the layers at once; bounds workspace memory.
pub const UBATCH: usize = 512;

pub struct Model {
    pub cfg: ModelConfig,
    pub weights: Weights,
    pub path: PathBuf,
    gguf: Gguf,
    /// Per layer (sliding-window layers may have their own base).
    ropes: Vec<Rope>,
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

    /// The logits of the last forward pass's wanted rows, `[rows, vocab]`.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }
}

/// One sequence's part in [`Model::forward_batch`]: its new tokens, the cache they are
/// appended to, an optional observer (KV policies), and from which of its new tokens on the
/// logits are wanted.
pub struct SeqRows<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    pub observer: Option<&'a mut dyn LayerObserver>,
    pub logits_from: usize,
}

/// A run of one sequence's tokens inside a ubatch: `tokens[start..start + len]`, at batch
/// rows `row..row + len`.
struct Part {
    seq: usize,
    start: usize,
    len: usize,
    row: usize,
}

impl Part {
    fn rows(&self) -> Range<usize> {
        self.row..self.row + self.len
    }
    /// Token indices of this part whose logits are wanted (those from `logits_from` on).
    fn wanted(&self, logits_from: usize) -> Range<usize> {
        let end = self.start + self.len;
        logits_from.clamp(self.start, end)..end
    }
}

impl Model {
    pub fn load(path: &Path) -> Result<Model> {
        let gguf = Gguf::open(path)?;
        let cfg = ModelConfig::from_gguf(&gguf)?;
        let weights = Weights::load(&gguf, &cfg)?;
        let ropes = (cfg.layers.iter())
            .map(|ls| {
                Rope::new(
                    cfg.spec.rope,
                    cfg.head_dim,
                    cfg.rope_dims,
                    ls.rope_theta,
                    ls.rope_freq_scale,
                    weights.rope_freqs.as_deref(),
                )
            })
            .collect();
        Ok(Model {
            cfg,
            weights,
            path: path.to_path_buf(),
            gguf,
            ropes,
        })
    }

    /// The GGUF file (metadata for the tokenizer and chat template).
    pub fn gguf(&self) -> &Gguf {
        &self.gguf
    }

    /// An empty cache for this model.
    pub fn new_cache(&self, dtype: KvDtype) -> KvCache {
        self.cfg.new_cache(dtype)
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
        let mut seq = [SeqRows {
            tokens,
            cache,
            observer: observer
                .as_mut()
                .map(|o| &mut **o as &mut dyn LayerObserver),
            logits_from,
        }];
        self.forward_batch(&mut seq, ws, &mut |_, i, l| on_logits(i, l))
    }

    /// One forward pass over the new tokens of several sequences: the matrix products run
    /// once over all their rows (the weights are read once per step, whatever the number
    /// of sequences); attention runs per sequence over its own cache. Calls
    /// `on_logits(sequence, token index, logits)` for each wanted row, in order within a
    /// sequence. Every sequence is checked before any runs, so an error changes no cache.
    pub fn forward_batch(
        &self,
        seqs: &mut [SeqRows<'_>],
        ws: &mut Workspace,
        on_logits: &mut dyn FnMut(usize, usize, &[f32]),
    ) -> Result<()> {
        for s in seqs.iter() {
            self.check_tokens(s.tokens, s.cache)?;
        }
        for s in seqs.iter_mut() {
            s.cache.reserve(s.tokens.len(), UBATCH);
        }
        // Ubatches of at most UBATCH rows, each taking the next rows of every sequence in
        // turn (a sequence's rows stay contiguous and in order within a ubatch).
        let mut done = vec![0usize; seqs.len()];
        let mut parts = Vec::with_capacity(seqs.len());
        loop {
            parts.clear();
            let mut row = 0;
            for (i, s) in seqs.iter().enumerate() {
                let take = (s.tokens.len() - done[i]).min(UBATCH - row);
                if take > 0 {
                    parts.push(Part {
                        seq: i,
                        start: done[i],
                        len: take,
                        row,
                    });
                    done[i] += take;
                    row += take;
                }
            }
            if parts.is_empty() {
                return Ok(());
            }
            self.forward_ubatch(seqs, &parts, ws);
            let vocab = self.cfg.vocab_size;
            let mut rows = ws.logits.chunks_exact(vocab);
            for p in &parts {
                for i in p.wanted(seqs[p.seq].logits_from) {
                    on_logits(
                        p.seq,
                        i,
                        rows.next().expect("a logits row per wanted token"),
                    );
                }
            }
        }
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

    /// One batch of at most `UBATCH` rows: `parts[k]` is a run of one sequence's tokens.
    /// Leaves the logits of the wanted rows in `ws.logits`, in the order of `parts`.
    fn forward_ubatch(&self, seqs: &mut [SeqRows<'_>], parts: &[Part], ws: &mut Workspace) {
        let c = &self.cfg;
        let n: usize = parts.iter().map(|p| p.len).sum();
        // The position of every batch row in its sequence.
        let mut positions = std::mem::take(&mut ws.positions);
        positions.clear();
        for p in parts {
            let p0 = seqs[p.seq].cache.seq_len();
            positions.extend((p0..p0 + p.len).map(|q| q as u32));
        }
        let (d, qd, kvd) = (c.n_embd, c.q_dim(), c.kv_dim());
        ws.x.resize(n * d, 0.0);
        ws.xn.resize(n * d, 0.0);
        ws.q.resize(n * qd, 0.0);
        ws.k.resize(n * kvd, 0.0);
        ws.v.resize(n * kvd, 0.0);
        ws.attn.resize(n * qd, 0.0);
        ws.proj.resize(n * d, 0.0);
        ws.gate.resize(n * c.n_ff, 0.0);

        self.embed(seqs, parts, ws);
        for l in 0..c.n_layers {
            self.attention_block(l, seqs, parts, &positions, ws);
            self.feed_forward_block(l, ws);
        }
        for p in parts {
            seqs[p.seq].cache.advance(p.len);
        }
        ws.positions = positions;
        self.output(seqs, parts, ws);
    }

    /// The batch rows' token embeddings into `ws.x`.
    fn embed(&self, seqs: &[SeqRows<'_>], parts: &[Part], ws: &mut Workspace) {
        let w = &self.weights;
        let d = self.cfg.n_embd;
        let embd = self.bytes(&w.token_embd);
        let erb = w.token_embd.row_bytes;
        let tokens = parts
            .iter()
            .flat_map(|p| &seqs[p.seq].tokens[p.start..p.start + p.len]);
        for (row, &t) in ws.x.chunks_exact_mut(d).zip(tokens) {
            let t = t as usize;
            quant::dequantize_row(w.token_embd.ty, &embd[t * erb..(t + 1) * erb], row);
        }
        if self.cfg.spec.embed_scale == EmbedScale::SqrtEmbd {
            let scale = (d as f32).sqrt();
            ws.x.iter_mut().for_each(|v| *v *= scale);
        }
    }

    /// Layer `l`'s attention sub-block: norm, Q/K/V (biases, QK norm, RoPE), attention of
    /// each sequence over its own cache, output projection, residual add.
    fn attention_block(
        &self,
        l: usize,
        seqs: &mut [SeqRows<'_>],
        parts: &[Part],
        positions: &[u32],
        ws: &mut Workspace,
    ) {
        let c = &self.cfg;
        let lw = &self.weights.layers[l];
        let (n, d, qd, kvd) = (positions.len(), c.n_embd, c.q_dim(), c.kv_dim());
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
        for (norm, out) in [(&lw.q_norm, &mut ws.q), (&lw.k_norm, &mut ws.k)] {
            if let Some(w) = norm {
                ops::rms_norm_in_place(out, w, c.rms_eps);
            }
        }
        let rope = &self.ropes[l];
        for (i, &pos) in positions.iter().enumerate() {
            rope.apply(&mut ws.q[i * qd..(i + 1) * qd], pos as usize);
            rope.apply(&mut ws.k[i * kvd..(i + 1) * kvd], pos as usize);
        }
        for p in parts {
            self.attend_part(l, &mut seqs[p.seq], &positions[p.rows()], p.rows(), ws);
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
        self.residual(lw.post_attn_norm.as_deref(), ws);
    }

    /// Layer `l`'s feed-forward sub-block: norm, gated MLP, residual add.
    fn feed_forward_block(&self, l: usize, ws: &mut Workspace) {
        let c = &self.cfg;
        let lw = &self.weights.layers[l];
        let n = ws.x.len() / c.n_embd;
        ops::rms_norm(&ws.x, &lw.ffn_norm, c.rms_eps, &mut ws.xn);
        ws.acts.reset(n, c.n_embd);
        // gate = act(xn gate^T) * (xn up^T), both products in one step.
        matmul_gated(
            c.spec.act,
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
        self.residual(lw.post_ffn_norm.as_deref(), ws);
    }

    /// `x += proj`, the sub-block's output normalised first where the architecture has a
    /// post-norm (`ws.xn`, free by then, holds it).
    fn residual(&self, post_norm: Option<&[f32]>, ws: &mut Workspace) {
        match post_norm {
            Some(w) => {
                ops::rms_norm(&ws.proj, w, self.cfg.rms_eps, &mut ws.xn);
                ops::add_in_place(&mut ws.x, &ws.xn);
            }
            None => ops::add_in_place(&mut ws.x, &ws.proj),
        }
    }

    /// Final norm and output projection of the wanted rows only, gathered (for one
    /// sequence, a suffix of its rows), into `ws.logits`.
    fn output(&self, seqs: &[SeqRows<'_>], parts: &[Part], ws: &mut Workspace) {
        let c = &self.cfg;
        let w = &self.weights;
        let d = c.n_embd;
        let mut m = 0;
        for p in parts {
            for i in p.wanted(seqs[p.seq].logits_from) {
                let r = p.row + i - p.start;
                if r != m {
                    ws.x.copy_within(r * d..(r + 1) * d, m * d);
                }
                m += 1;
            }
        }
        ws.logits.resize(m * c.vocab_size, 0.0);
        if m == 0 {
            return;
        }
        ops::rms_norm(
            &ws.x[..m * d],
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
        // A NaN or an infinity in the normed state is lost in the output projection (the
        // activations are quantized to 8 bits, where NaN becomes 0): its logits would look
        // fine, all equal, and sampling would pick token 0. Say what they are instead.
        for (x, row) in ws.xn[..m * d]
            .chunks_exact(d)
            .zip(ws.logits.chunks_exact_mut(c.vocab_size))
        {
            if !ops::all_finite(x) {
                row.fill(f32::NAN);
            }
        }
    }

    /// Layer `l`'s attention for one sequence's batch rows `rows` (at `positions`): appends
    /// their keys and values to its cache, attends, and hands the rows to its observer. A
    /// sliding-window layer is the model's own: no observer sees it, and the cache drops
    /// what the window has left behind.
    fn attend_part(
        &self,
        l: usize,
        seq: &mut SeqRows<'_>,
        positions: &[u32],
        rows: Range<usize>,
        ws: &mut Workspace,
    ) {
        let c = &self.cfg;
        let (qd, kvd, hd) = (c.q_dim(), c.kv_dim(), c.head_dim);
        let heads = seq.cache.layer_mut(l);
        for (i, &pos) in rows.clone().zip(positions) {
            for (h, head) in heads.iter_mut().enumerate() {
                let r = i * kvd + h * hd..i * kvd + (h + 1) * hd;
                head.push(pos, &ws.k[r.clone()], &ws.v[r]);
            }
        }
        let heads = seq.cache.layer(l);
        let q = &ws.q[rows.start * qd..rows.end * qd];
        let out = &mut ws.attn[rows.start * qd..rows.end * qd];
        let window = c.layers[l].window;
        let observer = seq.observer.as_mut().filter(|_| window.is_none());
        // KV policy hook: probabilities only for decode steps whose observer asks.
        let one = positions.len() == 1;
        let want_probs = one && observer.as_ref().is_some_and(|o| o.wants_probs(l));
        let mut probs: Vec<Vec<f32>> = Vec::new(); // [n_kv_heads][group * len]
        if one {
            let probs_out = want_probs.then_some(&mut probs);
            attention::attend_one(heads, q, positions[0], window, hd, out, probs_out);
        } else {
            attention::attend_batch(heads, q, positions, window, c.n_heads, hd, out);
        }
        if let Some(o) = observer {
            let probs = want_probs.then_some(&probs[..]);
            o.after_attention(l, q, positions, seq.cache.layer_mut(l), probs);
        }
        seq.cache.trim_window(l, positions[positions.len() - 1] + 1);
    }
}
