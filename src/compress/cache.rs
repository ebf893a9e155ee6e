//! One sequence's compressed cache: the per-head KV buffers, each head's policy and
//! cumulative scores, and the accounting. `Clone`, so a compressed context can be copied and
//! asked several questions.
//!
//! - Prefill ([`CompressedCache::prefill`]) runs with full attention; a layer observer
//!   gathers each head's attention statistics (`profile`), then each head gets its policy
//!   and keeps only its set; buffers shrink to fit (FASTGEN.md 3).
//! - Deferred compression (`KvSettings::compress_from`): while the sequence is shorter, the
//!   cache stays full and each decoded row is profiled too; when it reaches that length the
//!   heads are chosen from all rows so far and compressed, exactly as after a prompt of
//!   that length.
//! - Decode ([`CompressedCache::decode`]) follows the paper's Algorithm 2 per layer: append,
//!   attend, then evict by the head's policy (FASTGEN.md 4). Only heads whose policy has a
//!   `frequent` part ask for attention probabilities and keep scores.
//! - `--kv full` goes straight to the model: no observer, no per-token work.

use super::budget::{fit_threshold, HeadOptions};
use super::choice::recoveries_until;
use super::classes::TokenClasses;
use super::head::{compress_head, evict_step, make_room, HeadState};
use super::policy::{keep_set, Params, Policy};
use super::profile::{aggregate, HeadProfile, Profiler, ReplayPlan};
use super::settings::KvBudget;
use super::settings::{KvKind, KvSettings};
use super::stats::{KvReport, KvStats};
use crate::error::{Error, Result};
use crate::generate::Sequence;
use crate::kv_cache::{HeadCache, KvCache, KvDtype};
use crate::model::hook::LayerObserver;
use crate::model::{Model, ModelConfig, SeqRows, Workspace};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct CompressedCache {
    kv: KvCache,
    settings: Arc<KvSettings>,
    params: Params,
    vocab: Arc<TokenClasses>,
    /// Class of every position seen (`classes::{CONTROL, PUNCT, SINK}`).
    pos_classes: Vec<u8>, // [seq_len]
    heads: Vec<HeadState>, // [n_layers * n_kv_heads]
    /// Whether a layer has a head that needs decode probabilities.
    layer_wants: Vec<bool>, // [n_layers]
    group: usize,
    stats: KvStats,
    /// Deferred compression in progress: the statistics of the rows so far, until the
    /// sequence reaches the profiler's length.
    pending: Option<Profiler>,
    /// The positions of a prompt or conversation turn being fed in parts
    /// ([`CompressedCache::prefill_part`], [`CompressedCache::extend_part`]).
    feeding: Option<Range<usize>>,
}

impl CompressedCache {
    /// An empty cache for a model with this configuration. Fails on invalid settings.
    pub fn new(
        cfg: &ModelConfig,
        dtype: KvDtype,
        settings: Arc<KvSettings>,
        vocab: Arc<TokenClasses>,
    ) -> Result<CompressedCache> {
        settings.validate()?;
        if cfg.n_kv_heads == 0 || !cfg.n_heads.is_multiple_of(cfg.n_kv_heads) {
            return Err(Error::Metadata(format!(
                "{} query heads do not group over {} KV heads",
                cfg.n_heads, cfg.n_kv_heads
            )));
        }
        let policy = settings.fixed_policy().unwrap_or(Policy::FULL);
        let state = HeadState {
            policy,
            candidate: None,
            recovery: None,
            shortfall: None,
            scores: Vec::new(),
        };
        Ok(CompressedCache {
            kv: cfg.new_cache(dtype),
            params: settings.params(),
            settings,
            vocab,
            pos_classes: Vec::new(),
            heads: vec![state; cfg.n_layers * cfg.n_kv_heads],
            layer_wants: vec![false; cfg.n_layers],
            group: cfg.n_heads / cfg.n_kv_heads,
            stats: KvStats::default(),
            pending: None,
            feeding: None,
        })
    }

    pub fn kv(&self) -> &KvCache {
        &self.kv
    }
    /// For `--kv full`: allocates room for exactly `tokens` tokens in every head up front
    /// (see [`KvCache::reserve_total`]). Compressing caches size themselves as they evict.
    pub fn reserve_full(&mut self, tokens: usize) {
        if self.settings.kind == KvKind::Full {
            self.kv.reserve_total(tokens);
        }
    }
    /// `full` only: forgets every token from position `len` on (see [`KvCache::truncate`]);
    /// false, changing nothing, for the other methods, whose statistics and scores cannot be
    /// rolled back.
    pub fn truncate(&mut self, len: usize) -> bool {
        self.settings.kind == KvKind::Full && self.feeding.is_none() && self.kv.truncate(len)
    }
    /// Frees the room reserved beyond what the heads hold (a cache kept between turns).
    pub fn shrink_to_fit(&mut self) {
        self.kv.shrink_to_fit();
    }
    pub fn settings(&self) -> &KvSettings {
        &self.settings
    }
    pub fn head_state(&self, layer: usize, kv_head: usize) -> &HeadState {
        &self.heads[layer * self.kv.n_kv_heads + kv_head]
    }
    /// Every head's `shortfall`, `[layer][kv_head]` (what the policy map shows in full cells).
    pub fn head_shortfalls(&self) -> Vec<Vec<Option<f64>>> {
        (0..self.kv.n_layers)
            .map(|l| {
                (0..self.kv.n_kv_heads)
                    .map(|h| self.head_state(l, h).shortfall)
                    .collect()
            })
            .collect()
    }
    pub fn pos_classes(&self) -> &[u8] {
        &self.pos_classes
    }
    pub fn stats(&self) -> &KvStats {
        &self.stats
    }

    /// Fraction of (layer, KV head, position) entries evicted: `1 - kept / (L * H * n)`.
    pub fn pruned_ratio(&self) -> f64 {
        self.kv.pruned_ratio()
    }

    /// Bytes of the cumulative-score state.
    pub fn score_bytes(&self) -> usize {
        super::stats::score_bytes(&self.heads)
    }

    /// The accounting of FASTGEN.md 6 for the current state.
    pub fn report(&self) -> KvReport {
        KvReport::of(&self.kv, &self.settings, &self.heads, &self.stats)
    }

    /// Runs the prompt (into an empty cache), compresses, and returns the prompt's last
    /// logits.
    pub fn prefill(
        &mut self,
        model: &Model,
        ws: &mut Workspace,
        tokens: &[u32],
    ) -> Result<Vec<f32>> {
        let last = self.prefill_part(model, ws, tokens, tokens.len())?;
        Ok(last.expect("the whole prompt ran"))
    }

    /// Prefill in parts, so that a server can interleave a long prompt with other
    /// sequences' decode steps: runs `prompt[seq_len..upto]`, the next part of `prompt`
    /// (the whole prompt, passed each time). When `upto` reaches its end, compresses as
    /// [`CompressedCache::prefill`] does and returns the last token's logits; until then
    /// returns `None`. The statistics are those of one prefill: each part's rows are
    /// profiled as the forward pass's own batches of rows are.
    pub fn prefill_part(
        &mut self,
        model: &Model,
        ws: &mut Workspace,
        prompt: &[u32],
        upto: usize,
    ) -> Result<Option<Vec<f32>>> {
        let done = self.kv.seq_len();
        let s = prompt.len();
        if done == 0 {
            if prompt.is_empty() {
                return Err(Error::InvalidSetting("the prompt is empty".into()));
            }
            // The whole prompt, before anything per token is allocated (classes, scores).
            model.check_tokens(prompt, &self.kv)?;
        } else if self.feeding != Some(0..s) {
            return Err(Error::InvalidSetting(
                "a compressed cache takes one prompt: prefill needs an empty cache".into(),
            ));
        }
        check_part(done, upto, s)?;
        let t0 = Instant::now();
        if done == 0 {
            self.feeding = Some(0..s);
            if self.settings.kind != KvKind::Full && self.settings.needs_profile() {
                let at = self.settings.compress_at(s);
                self.pending = Some(self.profiler(self.settings.profile_start(at), at));
            }
        }
        let ran = self.run_rows(model, ws, &prompt[done..upto], upto == s);
        if ran.is_err() && done == 0 {
            self.feeding = None;
            self.pending = None;
        }
        if ran.is_ok() && upto == s {
            self.feeding = None;
            // A fixed policy that needs no statistics applies at once.
            if self.settings.kind != KvKind::Full && !self.settings.needs_profile() {
                self.compress(None);
            }
        }
        self.stats.prefill_ms += ms(t0);
        ran
    }

    /// Whether [`CompressedCache::extend_part`] can append a conversation's next turn of
    /// `tokens` tokens: after a prompt, with `full` (the cache just grows) or FastGen
    /// without a budget (the new turn is profiled and the heads' policies chosen again).
    /// The other methods would need their own rules for a second prompt: they run cold.
    pub fn can_extend(&self, tokens: usize) -> bool {
        let ready = self.feeding.is_none() && self.kv.seq_len() > 0 && tokens > 0;
        let method = match self.settings.kind {
            KvKind::Full => true,
            KvKind::FastGen => self.settings.fastgen.budget.is_none(),
            _ => false,
        };
        ready && method
    }

    /// Appends a conversation's next turn to a cache past its prompt (see
    /// [`CompressedCache::can_extend`]), in parts like [`CompressedCache::prefill_part`]:
    /// runs `turn[done..upto]` (the whole turn passed each time) and returns the last
    /// token's logits at its end.
    ///
    /// FastGen: while compression is still deferred the turn's rows are profiled with the
    /// earlier ones, exactly as if they had been in the first prompt. Once compressed, the
    /// turn's rows are profiled over what the heads kept (evicted positions get no
    /// attention, and stay evicted), and at the turn's end every head's policy is chosen
    /// again from them and applied to what it holds; the new heavy-hitter scores are the
    /// turn's column sums.
    pub fn extend_part(
        &mut self,
        model: &Model,
        ws: &mut Workspace,
        turn: &[u32],
        upto: usize,
    ) -> Result<Option<Vec<f32>>> {
        let now = self.kv.seq_len();
        let span = match &self.feeding {
            None if self.can_extend(turn.len()) => {
                model.check_tokens(turn, &self.kv)?;
                now..now + turn.len()
            }
            Some(f) if f.start > 0 && f.len() == turn.len() => f.clone(),
            _ => {
                return Err(Error::InvalidSetting(format!(
                    "this cache cannot take a {}-token turn after its {now} tokens (method \
                     {}{})",
                    turn.len(),
                    self.settings.kind,
                    if self.feeding.is_some() {
                        ", another prompt in progress"
                    } else {
                        ""
                    }
                )))
            }
        };
        check_part(now - span.start, upto, turn.len())?;
        let t0 = Instant::now();
        self.feeding = Some(span.clone());
        let mut part = &turn[now - span.start..upto];
        let mut last = None;
        while !part.is_empty() {
            if self.pending.is_none() && self.settings.kind == KvKind::FastGen {
                let from = self.kv.seq_len();
                let start = from.max(self.settings.profile_start(span.end));
                self.pending = Some(self.profiler(start, span.end));
            }
            // Deferred compression may fall inside the turn: the rows up to it are
            // profiled with the earlier ones, the rest as the new turn's.
            let seq = self.kv.seq_len();
            let cut = match &self.pending {
                Some(p) if p.seq_len() > seq => (p.seq_len() - seq).min(part.len()),
                _ => part.len(),
            };
            let (rows, rest) = part.split_at(cut);
            last = self.run_rows(model, ws, rows, rest.is_empty() && upto == turn.len())?;
            part = rest;
        }
        if upto == turn.len() {
            self.feeding = None;
        }
        self.stats.prefill_ms += ms(t0);
        Ok(last)
    }

    /// Runs `tokens` after what the cache holds (the last one's logits when `logits`),
    /// profiling their rows while a profiler is pending, and compresses when the sequence
    /// reaches the profiler's length.
    fn run_rows(
        &mut self,
        model: &Model,
        ws: &mut Workspace,
        tokens: &[u32],
        logits: bool,
    ) -> Result<Option<Vec<f32>>> {
        let done = self.kv.seq_len();
        let classes_before = self.pos_classes.len();
        if self.settings.kind != KvKind::Full {
            let sink = self.settings.parts.sink_tokens;
            let vocab = &self.vocab;
            let classes = (tokens.iter().enumerate()).map(|(i, &t)| vocab.at(t, done + i, sink));
            self.pos_classes.extend(classes);
        }
        let mut observer = self.pending.as_mut().map(|p| ProfileObserver {
            profiler: p,
            pos_classes: &self.pos_classes,
            ms: 0.0,
        });
        let mut last = None;
        let logits_from = if logits {
            tokens.len() - 1
        } else {
            tokens.len()
        };
        let run = model.forward_observed(
            tokens,
            &mut self.kv,
            ws,
            logits_from,
            &mut |_, l| last = Some(l.to_vec()),
            observer.as_mut().map(|o| o as &mut dyn LayerObserver),
        );
        self.stats.profile_ms += observer.map_or(0.0, |o| o.ms);
        if let Err(e) = run {
            self.pos_classes.truncate(classes_before);
            return Err(e);
        }
        if let Some(p) = self.pending.take_if(|p| self.kv.seq_len() >= p.seq_len()) {
            let t = Instant::now();
            self.compress(Some(&p));
            self.stats.profile_ms += ms(t);
        }
        Ok(last)
    }

    /// An empty profiler for rows `start..len` of a sequence compressed at length `len`.
    fn profiler(&self, start: usize, len: usize) -> Profiler {
        let st = &self.settings;
        let replay = (st.kind == KvKind::FastGen && st.fastgen.replay > 0).then(|| ReplayPlan {
            rows: st.fastgen.replay,
            candidates: st.fastgen.candidates.clone(),
            threshold: st.fastgen.recovery,
            agg: st.fastgen.gqa_agg,
            all: st.fastgen.budget.is_some(),
        });
        Profiler::new(
            self.kv.n_layers,
            self.kv.n_kv_heads,
            self.group,
            self.kv.head_dim,
            len,
            start,
            &self.params,
            replay,
        )
    }

    /// Whether the heads' policies are in force: false while compression is deferred.
    pub fn compressed(&self) -> bool {
        self.pending.is_none()
    }

    /// Chooses (or applies) each head's policy on the sequence so far and keeps only its set.
    fn compress(&mut self, profiler: Option<&Profiler>) {
        let s = self.kv.seq_len();
        self.stats.compressed_at = Some(s);
        let settings = &self.settings;
        let classes = &self.pos_classes;
        let n_kv = self.kv.n_kv_heads;
        let params = &self.params;
        // Sliding-window layers keep their window (the model's rule): no policy of ours.
        let kv = &self.kv;
        let windowed = |i: usize| kv.window(i / n_kv).is_some();
        if let (true, Some(p)) = (settings.is_snap(), profiler) {
            let ada = settings.kind == KvKind::AdaKv;
            self.heads = super::snapkv::compress(&mut self.kv, p, &settings.snap, ada);
            self.layer_wants.fill(false);
            return;
        }
        let budget = settings
            .fastgen
            .budget
            .filter(|_| settings.kind == KvKind::FastGen);
        // FastGen: each head's aggregated recovery per candidate (all of them in budget
        // mode, else up to the first reaching T) and, in budget mode, their kept entries.
        let options: Vec<Option<HeadOptions>> = (0..self.heads.len())
            .into_par_iter()
            .map(|i| {
                let prof = profiler.map(|p| &p.heads[i])?;
                (settings.fixed_policy().is_none() && !windowed(i))
                    .then(|| head_options(prof, classes, settings, params, budget.is_some()))
            })
            .collect();
        let threshold = match budget {
            Some(b) => {
                let entries = match b {
                    KvBudget::Ratio(r) => (r * (self.heads.len() * s) as f64).floor() as usize,
                    KvBudget::Bytes(bytes) => bytes / self.kv.dtype.entry_bytes(self.kv.head_dim),
                };
                // Sliding-window heads keep their window whatever the budget, so what they
                // hold comes off it before the other heads' choices are fitted.
                let windows: usize = (0..self.heads.len())
                    .filter(|&i| windowed(i))
                    .map(|i| kv.head(i / n_kv, i % n_kv).len())
                    .sum();
                let entries = entries.saturating_sub(windows);
                let opts: Vec<HeadOptions> = options.iter().flatten().cloned().collect();
                let fit = fit_threshold(&opts, entries);
                self.stats.budget_met = Some(fit.met);
                fit.threshold
            }
            None => settings.fastgen.recovery,
        };
        self.stats.recovery_used = (settings.kind == KvKind::FastGen).then_some(threshold);
        // Per head: its state (scores still empty) and the seeds of its scores.
        let plans: Vec<(HeadState, Vec<f32>)> = (0..self.heads.len())
            .into_par_iter()
            .map(|i| {
                let prof = profiler.map(|p| &p.heads[i]);
                let (policy, candidate, recovery, shortfall) =
                    match (settings.fixed_policy(), prof, &options[i]) {
                        _ if windowed(i) => (Policy::FULL, None, None, None),
                        (Some(p), Some(prof), _) => (
                            p,
                            None,
                            Some(aggregate(
                                &prof.recovery(p, classes),
                                settings.fastgen.gqa_agg,
                            )),
                            None,
                        ),
                        (None, _, Some(o)) => {
                            let index = o.choice(threshold);
                            let shortfall = index.checked_sub(1).map(|i| o.recovery[i]);
                            (
                                settings.fastgen.candidates[index],
                                Some(index),
                                Some(o.recovery[index]),
                                shortfall,
                            )
                        }
                        (Some(p), None, _) => (p, None, None, None),
                        (None, _, None) => (Policy::FULL, None, None, None),
                    };
                let seeds = match prof {
                    Some(prof) if policy.needs_scores() => prof.group_colsum(),
                    _ => Vec::new(),
                };
                let state = HeadState {
                    policy,
                    candidate,
                    recovery,
                    shortfall,
                    scores: Vec::new(),
                };
                (state, seeds)
            })
            .collect();
        for (i, (mut state, seeds)) in plans.into_iter().enumerate() {
            let head = self.kv.head_mut(i / n_kv, i % n_kv);
            state.scores = compress_head(
                head,
                state.policy,
                &self.pos_classes,
                &seeds,
                s,
                &self.params,
            );
            self.heads[i] = state;
        }
        for (l, w) in self.layer_wants.iter_mut().enumerate() {
            *w = self.heads[l * n_kv..(l + 1) * n_kv]
                .iter()
                .any(|h| h.policy.needs_scores());
        }
    }

    /// Runs one token, evicts by each head's policy, and returns the token's logits.
    pub fn decode<'w>(
        &mut self,
        model: &Model,
        ws: &'w mut Workspace,
        token: u32,
    ) -> Result<&'w [f32]> {
        let tokens = [token];
        let mut step = self.begin_decode(token)?;
        let ran = model.forward_batch(&mut [step.rows(&tokens)], ws, &mut |_, _, _| {});
        let done = step.finish();
        self.end_decode(done, ran.is_ok());
        ran?;
        Ok(ws.logits())
    }

    /// One decode step of several sequences together, one forward pass over one token of
    /// each (`tokens[i]` for `caches[i]`); calls `on_logits(i, logits)` for each. Each cache
    /// profiles or evicts as its own settings say, exactly as [`CompressedCache::decode`].
    pub fn decode_batch(
        model: &Model,
        ws: &mut Workspace,
        caches: &mut [&mut CompressedCache],
        tokens: &[u32],
        on_logits: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<()> {
        if caches.len() != tokens.len() {
            return Err(Error::InvalidSetting(format!(
                "decode_batch: {} caches but {} tokens",
                caches.len(),
                tokens.len()
            )));
        }
        // The one way a step cannot begin, checked for all before any begins.
        if caches.iter().any(|c| c.needs_prefill()) {
            return Err(decode_before_prefill());
        }
        let mut steps: Vec<DecodeStep> = caches
            .iter_mut()
            .zip(tokens)
            .map(|(c, &t)| c.begin_decode(t))
            .collect::<Result<_>>()?;
        let mut rows: Vec<SeqRows> = steps
            .iter_mut()
            .zip(tokens)
            .map(|(s, t)| s.rows(std::slice::from_ref(t)))
            .collect();
        let ran = model.forward_batch(&mut rows, ws, &mut |i, _, l| on_logits(i, l));
        drop(rows);
        let done: Vec<StepDone> = steps.into_iter().map(DecodeStep::finish).collect();
        for (c, d) in caches.iter_mut().zip(done) {
            c.end_decode(d, ran.is_ok());
        }
        ran
    }

    /// A compressing cache decodes only after its prompt, and no cache in the middle of a
    /// prompt or turn fed in parts.
    fn needs_prefill(&self) -> bool {
        (self.settings.kind != KvKind::Full && self.kv.seq_len() == 0) || self.feeding.is_some()
    }

    /// Starts a decode step of `token`: makes room, records its class, and lends the cache
    /// and the step's observer (profiling while compression is deferred, eviction after)
    /// to the forward pass. [`CompressedCache::end_decode`] completes it.
    fn begin_decode(&mut self, token: u32) -> Result<DecodeStep<'_>> {
        if self.needs_prefill() {
            return Err(decode_before_prefill());
        }
        if self.settings.kind == KvKind::Full {
            return Ok(DecodeStep {
                kv: &mut self.kv,
                observer: StepObserver::None,
            });
        }
        let pos = self.kv.seq_len();
        make_room(&mut self.kv);
        self.pos_classes
            .push(self.vocab.at(token, pos, self.settings.parts.sink_tokens));
        let observer = match self.pending.as_mut() {
            Some(profiler) => StepObserver::Profile(ProfileObserver {
                profiler,
                pos_classes: &self.pos_classes,
                ms: 0.0,
            }),
            None => StepObserver::Decode(DecodeObserver {
                heads: &mut self.heads,
                layer_wants: &self.layer_wants,
                pos_classes: &self.pos_classes,
                params: &self.params,
                n_kv: self.kv.n_kv_heads,
            }),
        };
        Ok(DecodeStep {
            kv: &mut self.kv,
            observer,
        })
    }

    /// Completes a decode step after the forward pass (which `ran` or failed and changed
    /// no cache): on failure forgets the token's class; while deferred, compresses once the
    /// sequence reaches the profiler's length; counts the step.
    fn end_decode(&mut self, done: StepDone, ran: bool) {
        if self.settings.kind != KvKind::Full {
            self.stats.profile_ms += done.profile_ms;
            if !ran {
                self.pos_classes.pop();
                return;
            }
            if let Some(p) = self.pending.take_if(|p| self.kv.seq_len() >= p.seq_len()) {
                let t = Instant::now();
                self.compress(Some(&p));
                self.stats.profile_ms += ms(t);
            }
        } else if !ran {
            return;
        }
        // Counted for the full cache too: its sliding-window layers evict as it decodes.
        self.stats.pruned_sum += self.pruned_ratio();
        self.stats.decode_steps += 1;
    }
}

/// A part `done..upto` of a prompt or turn of `len` tokens must be the next one.
fn check_part(done: usize, upto: usize, len: usize) -> Result<()> {
    if upto <= done || upto > len {
        return Err(Error::InvalidSetting(format!(
            "prefill part {done}..{upto} of a {len}-token prompt"
        )));
    }
    Ok(())
}

fn decode_before_prefill() -> Error {
    Error::InvalidSetting("decode before prefill: give the compressed cache a prompt first".into())
}

/// A decode step in flight: the sequence's cache and observer, lent to the forward pass.
struct DecodeStep<'c> {
    kv: &'c mut KvCache,
    observer: StepObserver<'c>,
}

enum StepObserver<'c> {
    /// `--kv full`: the plain engine.
    None,
    /// Compression deferred: the row is profiled.
    Profile(ProfileObserver<'c>),
    /// Compressed: eviction after attention.
    Decode(DecodeObserver<'c>),
}

/// What a finished step hands back to its cache.
struct StepDone {
    profile_ms: f64,
}

impl<'c> DecodeStep<'c> {
    fn rows<'s>(&'s mut self, tokens: &'s [u32]) -> SeqRows<'s> {
        let observer: Option<&mut dyn LayerObserver> = match &mut self.observer {
            StepObserver::None => None,
            StepObserver::Profile(o) => Some(o),
            StepObserver::Decode(o) => Some(o),
        };
        SeqRows {
            tokens,
            cache: self.kv,
            observer,
            logits_from: 0,
        }
    }
    fn finish(self) -> StepDone {
        let profile_ms = match &self.observer {
            StepObserver::Profile(o) => o.ms,
            _ => 0.0,
        };
        StepDone { profile_ms }
    }
}

impl Sequence for CompressedCache {
    fn prefill(&mut self, model: &Model, ws: &mut Workspace, tokens: &[u32]) -> Result<Vec<f32>> {
        CompressedCache::prefill(self, model, ws, tokens)
    }
    fn decode<'w>(
        &mut self,
        model: &Model,
        ws: &'w mut Workspace,
        token: u32,
    ) -> Result<&'w [f32]> {
        CompressedCache::decode(self, model, ws, token)
    }
    fn seq_len(&self) -> usize {
        self.kv.seq_len()
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// A FastGen head's candidates: aggregated recoveries up to the first reaching T (all of
/// them with `all`), and with `all` the entries each keeps on the prompt.
fn head_options(
    prof: &HeadProfile,
    classes: &[u8],
    settings: &KvSettings,
    params: &Params,
    all: bool,
) -> HeadOptions {
    let s = classes.len();
    let seeds = if all { prof.group_colsum() } else { Vec::new() };
    let positions: Vec<u32> = if all {
        (0..s as u32).collect()
    } else {
        Vec::new()
    };
    let cands = &settings.fastgen.candidates;
    let mut kept = Vec::new();
    let recovery = recoveries_until(cands.len(), settings.fastgen.recovery, all, |i| {
        if all {
            let keep = keep_set(cands[i], &positions, classes, &seeds, s, params);
            kept.push(keep.iter().filter(|&&k| k).count());
        }
        aggregate(
            &prof.candidate_recovery(i, cands[i], classes),
            settings.fastgen.gqa_agg,
        )
    });
    HeadOptions { recovery, kept }
}

/// Prefill, and decode while compression is deferred: feeds each layer's rows to the
/// profiler, timing it. Decode steps hand over attention's own probabilities; prefill rows
/// are recomputed from the queries (batched attention does not keep them).
struct ProfileObserver<'a> {
    profiler: &'a mut Profiler,
    pos_classes: &'a [u8],
    ms: f64,
}

impl LayerObserver for ProfileObserver<'_> {
    fn wants_probs(&self, _layer: usize) -> bool {
        true
    }
    fn after_attention(
        &mut self,
        layer: usize,
        q: &[f32],
        positions: &[u32],
        heads: &mut [HeadCache],
        probs: Option<&[Vec<f32>]>,
    ) {
        let t = Instant::now();
        match probs {
            Some(p) => {
                let pos = positions[0] as usize;
                self.profiler.observe_row(layer, pos, p, self.pos_classes)
            }
            None => self
                .profiler
                .observe(layer, q, positions, heads, self.pos_classes),
        }
        self.ms += ms(t);
    }
}

/// Decode: the eviction step of Algorithm 2, per layer, after attention.
struct DecodeObserver<'a> {
    heads: &'a mut [HeadState],
    layer_wants: &'a [bool],
    pos_classes: &'a [u8],
    params: &'a Params,
    n_kv: usize,
}

impl LayerObserver for DecodeObserver<'_> {
    fn wants_probs(&self, layer: usize) -> bool {
        self.layer_wants[layer]
    }
    fn after_attention(
        &mut self,
        layer: usize,
        _q: &[f32],
        positions: &[u32],
        heads: &mut [HeadCache],
        probs: Option<&[Vec<f32>]>,
    ) {
        let n = positions[0] as usize + 1;
        let states = &mut self.heads[layer * self.n_kv..(layer + 1) * self.n_kv];
        for (h, (head, st)) in heads.iter_mut().zip(states).enumerate() {
            evict_step(
                head,
                st,
                probs.map(|p| &p[h][..]),
                self.pos_classes,
                n,
                self.params,
            );
        }
    }
}
