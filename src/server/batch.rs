//! Continuous batching: one thread steps every running request together.
//!
//! Each step (1) takes the requests admitted since the last one, (2) ends the cancelled,
//! (3) runs the next part of the oldest unfinished prompt, and (4) decodes one token of
//! every other running request in one forward pass (`CompressedCache::decode_batch`: the
//! weights are read once for all of them; each cache profiles or evicts by its own
//! settings). A long prompt is fed in parts of `SHARED_PART` tokens while others are
//! decoding, so their streams keep flowing; alone it runs whole.
//!
//! Requests reach the thread with their [`Hooks`]: how to tell it was cancelled, where the
//! text goes, and what to do at the end. The hooks only move bytes and flags (channels,
//! atomics), so they never hold up the step.

use super::conversations::{Conversations, Reuse};
use super::engine::{Finish, Job, KvReport, Outcome};
use super::error::ApiError;
use super::stop::StopMatcher;
use fastgen::compress::{CacheFactory, CompressedCache, KvSettings};
use fastgen::generate::{check_finite, Timing};
use fastgen::model::{Model, Workspace};
use fastgen::sampling::Sampler;
use fastgen::tokenizer::{StreamDecoder, Tokenizer};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

/// Prompt tokens run per step while other requests are decoding: about a quarter of a
/// second of SmolLM2's prefill on two Zen 3 cores, the bound on their time between tokens.
pub const SHARED_PART: usize = 64;

/// How the scheduler reports back to a request's handler.
pub struct Hooks {
    /// True once the client is gone or the server is stopping.
    pub cancel: Box<dyn Fn() -> bool + Send>,
    /// New text (stop sequences removed); false when its receiver is gone.
    pub on_text: Box<dyn FnMut(String) -> bool + Send>,
    /// Called once, last.
    pub on_done: Box<dyn FnOnce(Result<Outcome, ApiError>) + Send>,
}

pub struct Submission {
    pub job: Job,
    pub hooks: Hooks,
}

/// What the scheduler thread owns.
pub struct Scheduler {
    pub model: Arc<Model>,
    pub tokenizer: Arc<Tokenizer>,
    pub caches: CacheFactory,
    pub conversations: Arc<Conversations>,
    /// KV bytes the running requests' caches hold, after each step.
    pub in_use: Arc<AtomicU64>,
}

/// One running request, apart from its cache (so that the caches of a step can be lent to
/// the forward pass while the rest is updated).
struct Request<'t> {
    job: Job,
    hooks: Hooks,
    sampler: Sampler,
    decoder: StreamDecoder<'t>,
    stops: StopMatcher,
    eog: &'t [u32],
    /// Prompt tokens already in the cache; `prompt_ids.len()` once the prompt has run.
    prefilled: usize,
    /// How much of the prompt came from a kept conversation.
    reuse: Reuse,
    generated: Vec<u32>,
    started: Instant,
    first_token: Option<Instant>,
    /// Set when the request is finished; it leaves the batch at the end of the step.
    finish: Option<Result<Finish, ApiError>>,
}

struct Running<'t> {
    cache: CompressedCache,
    req: Request<'t>,
}

impl Scheduler {
    /// Runs until every sender of `rx` is gone.
    pub fn run(self, rx: Receiver<Submission>) {
        let mut ws = Workspace::default();
        let mut running: Vec<Running> = Vec::new();
        loop {
            if running.is_empty() {
                match rx.recv() {
                    Ok(s) => self.start(s, &mut running),
                    Err(_) => return,
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(s) => self.start(s, &mut running),
                    Err(TryRecvError::Empty) => break,
                    // Finish what runs; nothing new can come.
                    Err(TryRecvError::Disconnected) => break,
                }
            }
            for r in &mut running {
                if r.req.finish.is_none() && (r.req.hooks.cancel)() {
                    r.req.finish = Some(Ok(Finish::Cancelled));
                }
            }
            // A panic in a step (a bug) must not leave its requests waiting forever: they
            // fail with an error, their caches are dropped, and the server goes on.
            let stepped = panic::catch_unwind(AssertUnwindSafe(|| {
                self.prefill_step(&mut running, &mut ws);
                self.decode_step(&mut running, &mut ws);
            }));
            if stepped.is_err() {
                ws = Workspace::default();
                for r in &mut running {
                    r.req
                        .fail("the engine failed during this step (see the server log)".into());
                }
            }
            let (done, going): (Vec<Running>, Vec<Running>) =
                running.drain(..).partition(|r| r.req.finish.is_some());
            running = going;
            // Counted before the finished hear they are done, so a client reading
            // `/metrics` after its answer sees its cache gone.
            let bytes = running.iter().map(|r| r.cache.kv().allocated_bytes());
            self.in_use
                .store(bytes.sum::<usize>() as u64, Ordering::Relaxed);
            for r in done {
                self.end(r);
            }
        }
    }

    /// Builds an admitted request's cache (continuing a kept conversation when its prompt
    /// extends one) and adds it to the batch.
    fn start<'t>(&'t self, s: Submission, running: &mut Vec<Running<'t>>) {
        let Submission { job, hooks } = s;
        let sampler = match Sampler::new(job.sampler.clone()) {
            Ok(s) => s,
            Err(e) => {
                (hooks.on_done)(Err(ApiError::invalid_param("temperature", e.to_string())));
                return;
            }
        };
        let settings = settings_of(&job);
        let kept = (job.cache_prompt)
            .then(|| self.conversations.take(&job.prompt_ids, &settings))
            .flatten();
        let (mut cache, reuse) = match kept {
            Some((cache, reuse)) => (cache, reuse),
            None => match self.caches.cache(&settings) {
                Ok(c) => (c, Reuse::default()),
                Err(e) => {
                    (hooks.on_done)(Err(ApiError::internal(format!("KV settings: {e}"))));
                    return;
                }
            },
        };
        // A full cache gets exactly what admission estimated (prompt plus generation), so
        // the budget bounds its real bytes.
        let n_ctx = self.model.cfg.n_ctx;
        cache.reserve_full((job.prompt_ids.len() + job.max_tokens).min(n_ctx));
        let eog: &[u32] = if job.ignore_eos {
            &[]
        } else {
            self.tokenizer.eog_ids()
        };
        running.push(Running {
            cache,
            req: Request {
                stops: StopMatcher::new(job.stop.clone()),
                prefilled: reuse.tokens,
                reuse,
                job,
                hooks,
                sampler,
                decoder: StreamDecoder::new(&self.tokenizer),
                eog,
                generated: Vec::new(),
                started: Instant::now(),
                first_token: None,
                finish: None,
            },
        });
    }

    /// Runs the next part of the oldest request whose prompt has not finished.
    fn prefill_step(&self, running: &mut [Running], ws: &mut Workspace) {
        let others_decoding = running.iter().any(|r| r.req.decoding());
        let Some(r) = running.iter_mut().find(|r| r.req.prefilling()) else {
            return;
        };
        let prompt = &r.req.job.prompt_ids;
        let upto = if others_decoding {
            (r.req.prefilled + SHARED_PART).min(prompt.len())
        } else {
            prompt.len()
        };
        let ran = if r.req.reuse.tokens > 0 {
            // A kept conversation: its new turn, in parts like any prompt.
            let kept = r.req.reuse.tokens;
            r.cache
                .extend_part(&self.model, ws, &prompt[kept..], upto - kept)
        } else {
            r.cache.prefill_part(&self.model, ws, prompt, upto)
        };
        match ran {
            Ok(Some(logits)) => {
                r.req.prefilled = prompt.len();
                r.req
                    .accept(&logits, r.cache.kv().seq_len(), self.model.cfg.n_ctx);
            }
            Ok(None) => r.req.prefilled = upto,
            Err(e) => r.req.fail(format!("prefill failed: {e}")),
        }
    }

    /// One token of every request past its prompt, in one forward pass.
    fn decode_step(&self, running: &mut [Running], ws: &mut Workspace) {
        let (mut caches, mut reqs): (Vec<&mut CompressedCache>, Vec<&mut Request>) = running
            .iter_mut()
            .filter(|r| r.req.decoding())
            .map(|r| (&mut r.cache, &mut r.req))
            .unzip();
        if caches.is_empty() {
            return;
        }
        let tokens: Vec<u32> = reqs.iter().map(|r| *r.generated.last().unwrap()).collect();
        let lens: Vec<usize> = caches.iter().map(|c| c.kv().seq_len() + 1).collect();
        let n_ctx = self.model.cfg.n_ctx;
        let ran = CompressedCache::decode_batch(
            &self.model,
            ws,
            &mut caches,
            &tokens,
            &mut |i, logits| reqs[i].accept(logits, lens[i], n_ctx),
        );
        if let Err(e) = ran {
            for r in reqs {
                r.fail(format!("decoding failed: {e}"));
            }
        }
    }

    /// Reports a finished request and frees (or keeps) its cache.
    fn end(&self, r: Running) {
        let Running { mut cache, req } = r;
        let Request {
            job,
            mut hooks,
            mut decoder,
            mut stops,
            generated,
            started,
            first_token,
            finish,
            reuse,
            ..
        } = req;
        let finish = match finish.expect("ended requests have a finish") {
            Ok(f) => f,
            Err(e) => {
                drop(cache);
                (hooks.on_done)(Err(e));
                return;
            }
        };
        let report = KvReport::from_library(&cache.report(), &job.kv, &reuse);
        if finish != Finish::Cancelled && job.cache_prompt {
            // The cache holds the prompt and every generated token but the last. A `full`
            // cache keeps only the prompt: the answer's entries came from the decode
            // kernels, whose rounding differs from a prefill's, so continuing them would
            // drift from a cold run; run again with the next turn, they are the cold run's.
            let mut tokens = job.prompt_ids.clone();
            if !cache.truncate(tokens.len()) {
                tokens.extend_from_slice(&generated[..generated.len().saturating_sub(1)]);
            }
            self.conversations.keep(tokens, cache);
        } else {
            drop(cache);
        }
        if finish != Finish::Cancelled {
            // The tail: an unfinished character, then text held back for a stop sequence.
            let mut tail = stops.push(&decoder.flush());
            if !stops.stopped() {
                tail.push_str(&stops.finish());
            }
            if !tail.is_empty() {
                (hooks.on_text)(tail);
            }
        }
        let now = Instant::now();
        let first = first_token.unwrap_or(now);
        let timing = Timing {
            prompt_tokens: job.prompt_ids.len(),
            generated_tokens: generated.len(),
            prefill_ms: (first - started).as_secs_f64() * 1e3,
            decode_ms: (now - first).as_secs_f64() * 1e3,
        };
        (hooks.on_done)(Ok(Outcome {
            finish: if stops.stopped() {
                Finish::Stop
            } else {
                finish
            },
            prompt_tokens: job.prompt_ids.len(),
            completion_tokens: generated.len(),
            timing,
            kv: report,
        }));
    }
}

impl Request<'_> {
    fn prefilling(&self) -> bool {
        self.finish.is_none() && self.prefilled < self.job.prompt_ids.len()
    }

    fn decoding(&self) -> bool {
        self.finish.is_none() && self.prefilled == self.job.prompt_ids.len()
    }

    fn fail(&mut self, msg: String) {
        self.finish = Some(Err(ApiError::internal(msg)));
    }

    /// Samples the next token from `logits` (the cache then holds `seq_len` tokens), passes
    /// its text on, and decides whether the request goes on.
    fn accept(&mut self, logits: &[f32], seq_len: usize, n_ctx: usize) {
        if let Err(e) = check_finite(logits, self.generated.len()) {
            return self.fail(format!("generation failed: {e}"));
        }
        let id = self.sampler.sample(logits);
        self.generated.push(id);
        self.first_token.get_or_insert_with(Instant::now);
        if self.eog.contains(&id) {
            self.finish = Some(Ok(Finish::Stop));
            return;
        }
        let text = self.stops.push(&self.decoder.push(id));
        if !text.is_empty() && !(self.hooks.on_text)(text) {
            self.finish = Some(Ok(Finish::Cancelled));
        } else if self.stops.stopped() {
            self.finish = Some(Ok(Finish::Stop));
        } else if self.generated.len() >= self.job.max_tokens || seq_len >= n_ctx {
            self.finish = Some(Ok(Finish::Length));
        }
    }
}

/// The library's settings for a request's granted policy.
pub fn settings_of(job: &Job) -> KvSettings {
    KvSettings::with_kind(job.kv.kind).with(|s| {
        s.fastgen.recovery = job.kv.recovery;
        s.fastgen.compress_from = job.kv.compress_from;
    })
}
