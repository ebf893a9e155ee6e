//! FastGen on the real models: `--kv full` and `--kv fastgen --recovery 1.0` are exactly the
//! full cache; the profiler inside prefill agrees with exact attention maps; allocated bytes
//! follow kept entries; and one registry runs every policy through the same generation
//! checks.

mod common;

use fastgen::compress::{
    choose_policy, keep_set, Budget, CompressedCache, GqaAgg, HeadProfile, KvBudget, KvKind,
    KvSettings, Params, Pool, ProfileRows, SnapSettings, TokenClasses, DECODE_SPARE,
};
use fastgen::generate::{generate, GenerateOptions, Sequence};
use fastgen::kv_cache::{HeadCache, KvDtype, WINDOW_SLACK};
use fastgen::model::hook::LayerObserver;
use fastgen::model::{Model, Workspace};
use fastgen::sampling::SamplerConfig;
use fastgen::tokenizer::Tokenizer;
use std::sync::Arc;

struct Loaded {
    model: Model,
    classes: Arc<TokenClasses>,
    essay: Vec<u32>,
}

fn load(name: &str) -> Loaded {
    let path = fastgen::fetch::ensure_model(name).expect("model fetch");
    let model = Model::load(&path).expect("model loads");
    let tok = Tokenizer::from_gguf(model.gguf()).unwrap();
    let essay = tok
        .encode(&fastgen::fetch::essay_text("worked.txt").unwrap())
        .unwrap();
    Loaded {
        classes: Arc::new(TokenClasses::from_tokenizer(&tok, false)),
        model,
        essay,
    }
}

fn cache(l: &Loaded, s: KvSettings) -> CompressedCache {
    CompressedCache::new(&l.model.cfg, KvDtype::F16, Arc::new(s), l.classes.clone()).unwrap()
}

/// Every head's kept positions, `[layer * n_kv_heads + kv_head]`.
fn kept_positions(c: &CompressedCache) -> Vec<Vec<u32>> {
    c.kv()
        .heads()
        .iter()
        .map(|h| h.positions().to_vec())
        .collect()
}

/// Teacher-forced logits: the prompt's last, then after each of `forced`.
fn logits_of(seq: &mut dyn Sequence, l: &Loaded, prompt: &[u32], forced: &[u32]) -> Vec<Vec<f32>> {
    let mut ws = Workspace::default();
    let mut out = vec![seq.prefill(&l.model, &mut ws, prompt).unwrap()];
    for &t in forced {
        out.push(seq.decode(&l.model, &mut ws, t).unwrap().to_vec());
    }
    out
}

fn full_and_lossless_fastgen_equal_the_engine(name: &str) {
    let l = load(name);
    let prompt = &l.essay[..300];
    let forced = &l.essay[300..324];
    let mut plain = l.model.new_cache(KvDtype::F16);
    let want = logits_of(&mut plain, &l, prompt, forced);
    let mut full = cache(&l, KvSettings::with_kind(KvKind::Full));
    assert_eq!(
        logits_of(&mut full, &l, prompt, forced),
        want,
        "{name}: --kv full"
    );
    assert_eq!(full.report().pruned_ratio, 0.0);
    let mut lossless = cache(&l, KvSettings::default().with(|s| s.fastgen.recovery = 1.0));
    let got = logits_of(&mut lossless, &l, prompt, forced);
    let r = lossless.report();
    assert!(
        r.policies.iter().flatten().all(|p| p == "full"),
        "{name}: T = 1 must choose full everywhere: {:?}",
        r.histogram
    );
    assert_eq!(got, want, "{name}: --kv fastgen --recovery 1.0");
    assert_eq!(r.pruned_ratio, 0.0);
}

#[test]
fn smollm2_full_and_recovery_one_are_exact() {
    full_and_lossless_fastgen_equal_the_engine("smollm2");
}

#[test]
fn qwen_full_and_recovery_one_are_exact() {
    full_and_lossless_fastgen_equal_the_engine("qwen2.5-0.5b");
}

/// Keeps every layer's query rows during a plain forward pass.
struct QueryRecorder {
    q: Vec<Vec<f32>>, // [n_layers][S * q_dim]
}

impl LayerObserver for QueryRecorder {
    fn wants_probs(&self, _: usize) -> bool {
        false
    }
    fn after_attention(
        &mut self,
        l: usize,
        q: &[f32],
        _: &[u32],
        _: &mut [HeadCache],
        _: Option<&[Vec<f32>]>,
    ) {
        self.q[l].extend_from_slice(q);
    }
}

/// Exact causal softmax maps `[group][S][S]` of one KV head, with the engine's own dot and
/// softmax.
fn exact_maps(
    q: &[f32],
    head: &HeadCache,
    kv_head: usize,
    group: usize,
    hd: usize,
    q_dim: usize,
) -> Vec<Vec<Vec<f32>>> {
    let s = head.len();
    let mut kb = Vec::new();
    let keys = head.keys_f32(0, s, &mut kb).to_vec();
    let scale = 1.0 / (hd as f32).sqrt();
    (0..group)
        .map(|g| {
            let off = (kv_head * group + g) * hd;
            (0..s)
                .map(|i| {
                    let qv = &q[i * q_dim + off..i * q_dim + off + hd];
                    let mut row: Vec<f32> = (0..=i)
                        .map(|j| fastgen::attention::dot(qv, &keys[j * hd..(j + 1) * hd]) * scale)
                        .collect();
                    fastgen::model::ops::softmax(&mut row);
                    row.resize(s, 0.0);
                    row
                })
                .collect()
        })
        .collect()
}

#[test]
fn profiling_inside_prefill_matches_exact_attention_maps() {
    // 600 tokens: two prefill batches (UBATCH 512), so statistics must carry across them.
    let l = load("smollm2");
    let cfg = &l.model.cfg;
    let prompt = &l.essay[..600];
    let s = prompt.len();
    let mut plain = l.model.new_cache(KvDtype::F16);
    let mut rec = QueryRecorder {
        q: vec![Vec::new(); cfg.n_layers],
    };
    let mut ws = Workspace::default();
    l.model
        .forward_observed(
            prompt,
            &mut plain,
            &mut ws,
            s - 1,
            &mut |_, _| {},
            Some(&mut rec),
        )
        .unwrap();
    let group = cfg.n_heads / cfg.n_kv_heads;
    // The paper's static recovery, and replay of the last rows (the default).
    for (rows, agg, replay) in [
        (ProfileRows::All, GqaAgg::Min, 0),
        (ProfileRows::Last(64), GqaAgg::Mean, 0),
        (ProfileRows::All, GqaAgg::Min, 128),
    ] {
        let settings = KvSettings::paper().with(|s| {
            s.fastgen.profile_rows = rows;
            s.fastgen.gqa_agg = agg;
            s.fastgen.replay = replay;
        });
        let mut c = cache(&l, settings.clone());
        c.prefill(&l.model, &mut Workspace::default(), prompt)
            .unwrap();
        let params = settings.params();
        let mut checked = 0;
        for layer in (0..cfg.n_layers).step_by(7) {
            for h in 0..cfg.n_kv_heads {
                let maps = exact_maps(
                    &rec.q[layer],
                    plain.head(layer, h),
                    h,
                    group,
                    cfg.head_dim,
                    cfg.q_dim(),
                );
                let mut prof =
                    HeadProfile::from_maps_replay(&maps, rows.start(s)..s, &params, replay);
                let (classes, cands) = (c.pos_classes(), &settings.fastgen.candidates);
                prof.replay(classes, cands, settings.fastgen.recovery, agg, false);
                let want = choose_policy(
                    &prof,
                    c.pos_classes(),
                    &settings.fastgen.candidates,
                    settings.fastgen.recovery,
                    agg,
                );
                let st = c.head_state(layer, h);
                let got = st.recovery.unwrap();
                assert!(
                    (got - want.recovery).abs() < 1e-4
                        || (want.recovery - settings.fastgen.recovery).abs() < 1e-4,
                    "{rows} layer {layer} head {h}: {got} vs exact {}",
                    want.recovery
                );
                assert_eq!(st.policy, want.policy, "{rows} layer {layer} head {h}");
                // The cache kept exactly the chosen policy's set at n = S.
                let seeds = prof.group_colsum();
                let all: Vec<u32> = (0..s as u32).collect();
                let keep = keep_set(want.policy, &all, c.pos_classes(), &seeds, s, &params);
                let kept: Vec<u32> = all
                    .iter()
                    .zip(&keep)
                    .filter(|(_, &k)| k)
                    .map(|(&p, _)| p)
                    .collect();
                let held = c.kv().head(layer, h).positions();
                let diff = kept.iter().filter(|p| !held.contains(p)).count()
                    + held.iter().filter(|p| !kept.contains(p)).count();
                // Near-tied scores may swap a frequent token or two (f32 sums in another order).
                assert!(
                    diff <= 4,
                    "{rows} layer {layer} head {h}: {diff} positions differ"
                );
                checked += 1;
            }
        }
        assert!(checked >= 12);
    }
}

/// The default FastGen compressed right after the prompt, however short: the method itself
/// (the default defers compression until 512 tokens).
fn forced() -> KvSettings {
    KvSettings::default().with(|s| s.fastgen.compress_from = 0)
}

/// Every method the registry knows, by name and settings.
fn registry() -> Vec<(&'static str, KvSettings)> {
    let d = forced;
    vec![
        ("full", KvSettings::with_kind(KvKind::Full)),
        ("fastgen", d()),
        (
            "fastgen deferred to 210 tokens",
            KvSettings::default().with(|s| s.fastgen.compress_from = 210),
        ),
        ("fastgen T=0.9", d().with(|s| s.fastgen.recovery = 0.9)),
        (
            "fastgen mean last:64 grace 4 sinks 4",
            d().with(|s| {
                s.fastgen.gqa_agg = GqaAgg::Mean;
                s.fastgen.profile_rows = ProfileRows::Last(64);
                s.parts.frequent_grace = 4;
                s.parts.sink_tokens = 4;
            }),
        ),
        (
            "fastgen custom candidates, punct whitespace",
            d().with(|s| {
                s.fastgen.candidates =
                    fastgen::compress::parse_candidates("special+punct+local,frequent+local,full")
                        .unwrap();
                s.parts.punct_whitespace = true;
            }),
        ),
        ("window ratio", KvSettings::with_kind(KvKind::Window)),
        (
            "window tokens",
            KvSettings::with_kind(KvKind::Window).with(|s| s.window = Budget::Tokens(32)),
        ),
        ("h2o", KvSettings::with_kind(KvKind::H2o)),
        (
            "h2o 0.1/0.2",
            KvSettings::with_kind(KvKind::H2o).with(|s| {
                s.parts.r_local = 0.1;
                s.parts.r_frequent = 0.2;
            }),
        ),
        (
            "fixed:special+punct+frequent",
            KvSettings::with_kind("fixed:special+punct+frequent".parse().unwrap()),
        ),
        (
            "fixed:special+punct",
            KvSettings::with_kind("fixed:special+punct".parse().unwrap()),
        ),
        (
            "fixed:local",
            KvSettings::with_kind("fixed:local".parse().unwrap()),
        ),
        ("snapkv", KvSettings::with_kind(KvKind::SnapKv)),
        (
            "adakv 30% W=16 k=5 avg",
            KvSettings::with_kind(KvKind::AdaKv).with(|s| {
                s.snap = SnapSettings {
                    window: 16,
                    kernel: 5,
                    budget: 0.3,
                    pool: Pool::Avg,
                }
            }),
        ),
    ]
}

#[test]
fn every_policy_passes_the_same_generation_checks() {
    let l = load("smollm2");
    let cfg = &l.model.cfg;
    let prompt = &l.essay[..200];
    let opts = GenerateOptions {
        max_tokens: 24,
        sampler: SamplerConfig::greedy(),
        top_logprobs: 0,
    };
    let mut ws = Workspace::default();
    let entry = 2 * cfg.head_dim * KvDtype::F16.bytes();
    let heads = cfg.n_layers * cfg.n_kv_heads;
    for (name, settings) in registry() {
        let mut c = cache(&l, settings.clone());
        let gen = generate(&l.model, &mut c, &mut ws, prompt, &opts, &[], &mut |_| true).unwrap();
        assert_eq!(gen.generated_ids.len(), 24, "{name}");
        assert!(gen.steps.iter().all(|s| s.logprob.is_finite()), "{name}");
        let n = prompt.len() + 23;
        let r = c.report();
        let kept = c.kv().kept_entries();
        assert_eq!(r.seq_len, n, "{name}");
        assert_eq!(r.kept_entries, kept, "{name}");
        assert!(
            (r.pruned_ratio - (1.0 - kept as f64 / (heads * n) as f64)).abs() < 1e-12,
            "{name}"
        );
        assert!((0.0..1.0).contains(&r.pruned_ratio_mean), "{name}");
        assert_eq!(r.kv_bytes_full, heads * n * entry, "{name}");
        assert_eq!(r.kv_bytes_kept, kept * entry, "{name}");
        assert!(r.kv_bytes_allocated >= r.kv_bytes_kept, "{name}");
        if settings.kind != KvKind::Full {
            // The documented slack: at most 2 * DECODE_SPARE spare slots per head.
            assert!(
                r.kv_bytes_allocated <= r.kv_bytes_kept + 2 * DECODE_SPARE * heads * entry,
                "{name}"
            );
        }
        // Profiling happens inside prefill unless compression was deferred past the prompt.
        match r.compressed_at {
            Some(at) if at > prompt.len() => {
                assert_eq!(at, settings.fastgen.compress_from, "{name}")
            }
            _ => assert!(r.profile_ms <= r.prefill_ms, "{name}"),
        }
        let params = settings.params();
        let mut scores_needed = false;
        let s = prompt.len();
        let (window, decoded) = (settings.snap.window_len(s), n - s);
        for layer in 0..cfg.n_layers {
            if settings.is_snap() {
                // The layer keeps its budget of the prompt per head, and every decoded token.
                let held: usize = c.kv().layer(layer).iter().map(|h| h.len()).sum();
                let per_head = settings.snap.kept_per_head(s) + decoded;
                assert_eq!(held, cfg.n_kv_heads * per_head, "{name} layer {layer}");
            }
            for h in 0..cfg.n_kv_heads {
                let head = c.kv().head(layer, h);
                let st = c.head_state(layer, h);
                let pos = head.positions();
                assert!(
                    pos.windows(2).all(|w| w[0] < w[1]),
                    "{name}: positions increase"
                );
                assert!(pos.last().is_none_or(|&p| (p as usize) < n), "{name}");
                // Eviction is idempotent: the policy keeps everything the head holds.
                let again = keep_set(st.policy, pos, c.pos_classes(), st.scores(), n, &params);
                assert!(
                    again.iter().all(|&k| k),
                    "{name} layer {layer} head {h}: {}",
                    st.policy
                );
                if st.policy.needs_scores() {
                    scores_needed = true;
                    assert_eq!(st.scores().len(), head.len(), "{name}");
                } else {
                    assert!(st.scores().is_empty(), "{name}");
                }
                if st.policy.is_full() && !settings.is_snap() {
                    assert_eq!(head.len(), n, "{name}: full keeps all");
                }
                match settings.kind {
                    KvKind::FastGen => {
                        let rec = st.recovery.expect("profiled");
                        assert!(settings.fastgen.candidates.contains(&st.policy), "{name}");
                        assert!(
                            rec >= settings.fastgen.recovery || st.policy.is_full(),
                            "{name}: {rec}"
                        );
                    }
                    KvKind::Window => {
                        let w = params.local.of(n);
                        assert_eq!(head.len(), w + 1, "{name}: sink + window");
                        assert_eq!(pos[0], 0, "{name}");
                    }
                    KvKind::H2o => {
                        let (f, w) = (params.frequent.of(n), params.local.of(n));
                        assert!(
                            head.len() >= f.max(w) && head.len() <= f + w,
                            "{name}: {}",
                            head.len()
                        );
                    }
                    KvKind::SnapKv | KvKind::AdaKv => {
                        // The observation window and everything decoded, in order, at the end.
                        let tail: Vec<u32> = (s - window..n).map(|p| p as u32).collect();
                        assert!(pos.ends_with(&tail), "{name} layer {layer} head {h}");
                        if settings.kind == KvKind::SnapKv {
                            let want = settings.snap.kept_per_head(s) + decoded;
                            assert_eq!(head.len(), want, "{name}");
                        }
                        assert!(st.recovery.is_some_and(|r| r > 0.0 && r <= 1.0 + 1e-6));
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(r.score_bytes > 0, scores_needed, "{name}");
        assert_eq!(
            r.histogram
                .iter()
                .map(|l| l.iter().map(|(_, k)| k).sum::<usize>())
                .sum::<usize>(),
            heads
        );
        // A copy continues exactly like the original and independently of it.
        let mut copy = c.clone();
        let next = *gen.generated_ids.last().unwrap();
        let a = c.decode(&l.model, &mut ws, next).unwrap().to_vec();
        let b = copy.decode(&l.model, &mut ws, next).unwrap().to_vec();
        assert_eq!(a, b, "{name}: clone");
        copy.decode(&l.model, &mut ws, next).unwrap();
        assert_eq!(c.kv().seq_len() + 1, copy.kv().seq_len(), "{name}");
        eprintln!("{name:>44}: pruned {:.1}%", 100.0 * r.pruned_ratio);
    }
}

#[test]
fn budget_mode_picks_the_largest_threshold_that_fits() {
    let l = load("smollm2");
    let cfg = &l.model.cfg;
    let prompt = &l.essay[..300];
    let all = (cfg.n_layers * cfg.n_kv_heads * prompt.len()) as f64;
    let prefill = |s: KvSettings| {
        let mut c = cache(&l, s);
        c.prefill(&l.model, &mut Workspace::default(), prompt)
            .unwrap();
        c.report()
    };
    let entry = 2 * cfg.head_dim * KvDtype::F16.bytes();
    for budget in [
        KvBudget::Ratio(0.7),
        KvBudget::Bytes(entry * all as usize * 17 / 20),
    ] {
        let limit = match budget {
            KvBudget::Ratio(r) => r * all,
            KvBudget::Bytes(b) => (b / entry) as f64,
        };
        let r = prefill(forced().with(|s| s.fastgen.budget = Some(budget)));
        assert_eq!(r.budget_met, Some(true), "{budget}");
        assert!(
            r.kept_entries as f64 <= limit,
            "{budget}: {}",
            r.kept_entries
        );
        assert!(r.summary().contains("picked T="), "{}", r.summary());
        // The T it reports gives the same cache when asked for directly; any larger T
        // keeps more than the budget.
        let t = r.recovery.unwrap();
        assert!(t < 1.0, "{budget}: the whole prompt should not fit");
        let same = prefill(forced().with(|s| s.fastgen.recovery = t));
        assert_eq!(same.policies, r.policies, "{budget}");
        let more = prefill(forced().with(|s| s.fastgen.recovery = t + 1e-9));
        assert!(more.kept_entries as f64 > limit, "{budget} at T={t}");
    }
    // A budget below the cheapest choices: T = 0, reported as not met.
    let r = prefill(forced().with(|s| s.fastgen.budget = Some(KvBudget::Bytes(1))));
    assert_eq!((r.recovery, r.budget_met), (Some(0.0), Some(false)));
}

#[test]
fn allocated_bytes_follow_kept_entries() {
    let l = load("smollm2");
    let cfg = &l.model.cfg;
    let entry = 2 * cfg.head_dim * KvDtype::F16.bytes();
    let heads = cfg.n_layers * cfg.n_kv_heads;
    let mut c = cache(&l, forced().with(|s| s.fastgen.recovery = 0.9));
    let mut ws = Workspace::default();
    c.prefill(&l.model, &mut ws, &l.essay[..400]).unwrap();
    // Right after prefill: shrunk to fit, exactly kept x bytes per entry.
    let r = c.report();
    assert!(r.pruned_ratio > 0.2, "{}", r.pruned_ratio);
    assert_eq!(r.kv_bytes_allocated, r.kept_entries * entry);
    for &t in &l.essay[400..480] {
        c.decode(&l.model, &mut ws, t).unwrap();
        let r = c.report();
        let slack = r.kv_bytes_allocated - r.kv_bytes_kept;
        assert!(slack <= 2 * DECODE_SPARE * heads * entry, "slack {slack}");
        // Score state: 4 bytes per scored slot plus the same kind of slack.
        assert!(r.score_bytes <= (r.kept_entries + 2 * DECODE_SPARE * heads) * 4);
    }
    // The plain cache doubles: a reference for what the slack bound prevents.
    let mut plain = cfg.new_cache(KvDtype::F16);
    l.model
        .prefill(&l.essay[..400], &mut plain, &mut ws)
        .unwrap();
    l.model.decode(l.essay[400], &mut plain, &mut ws).unwrap();
    assert!(plain.allocated_bytes() > plain.full_bytes() * 3 / 2);
}

#[test]
fn compressed_cache_refuses_misuse() {
    let l = load("smollm2");
    let mut c = cache(&l, KvSettings::default());
    let mut ws = Workspace::default();
    assert!(c.decode(&l.model, &mut ws, 1).is_err());
    assert!(c.prefill(&l.model, &mut ws, &[]).is_err());
    c.prefill(&l.model, &mut ws, &l.essay[..20]).unwrap();
    assert!(c.prefill(&l.model, &mut ws, &l.essay[..20]).is_err());
    let bad = KvSettings::default().with(|s| s.fastgen.recovery = 2.0);
    let e = CompressedCache::new(&l.model.cfg, KvDtype::F16, Arc::new(bad), l.classes.clone())
        .unwrap_err();
    assert!(e.to_string().contains("--recovery"), "{e}");
    let _ = Params::default();
}

/// Deferred compression (the default): a sequence that stays under `compress_from` is the
/// full cache, logit for logit; one that reaches it is compressed at exactly that length,
/// with the policies that a prompt of the same tokens gets when compressed on the spot.
#[test]
fn deferred_compression_is_full_then_chooses_on_the_whole_sequence() {
    let l = load("smollm2");
    let (prompt, at) = (&l.essay[..100], 400);
    let deferred = KvSettings::default().with(|s| s.fastgen.compress_from = at);
    let mut plain = l.model.new_cache(KvDtype::F16);
    let want = logits_of(&mut plain, &l, prompt, &l.essay[100..at - 1]);
    let mut under = cache(&l, deferred.clone());
    assert_eq!(
        logits_of(&mut under, &l, prompt, &l.essay[100..at - 1]),
        want,
        "one token short of compress_from: exactly the full cache"
    );
    assert!(!under.compressed());
    let r = under.report();
    assert_eq!((r.compressed_at, r.pruned_ratio), (None, 0.0));
    assert!(r.summary().contains("not compressed"), "{}", r.summary());

    // One more decoded token reaches the length: the heads are chosen and compressed.
    let mut ws = Workspace::default();
    under.decode(&l.model, &mut ws, l.essay[at - 1]).unwrap();
    assert!(under.compressed());
    let got = under.report();
    assert_eq!(got.compressed_at, Some(at));
    assert!(got.pruned_ratio > 0.0, "{}", got.summary());

    let mut on_prompt = cache(
        &l,
        KvSettings::default().with(|s| s.fastgen.compress_from = 0),
    );
    on_prompt
        .prefill(&l.model, &mut ws, &l.essay[..at])
        .unwrap();
    let want = on_prompt.report();
    assert_eq!(want.compressed_at, Some(at));
    // Decoded rows' probabilities come from attention itself, prompt rows' from the
    // profiler's recomputation (within 1e-6): a head on a threshold's edge may differ.
    let heads = got.policies.iter().flatten().count();
    let same = (got.policies.iter().flatten())
        .zip(want.policies.iter().flatten())
        .filter(|(a, b)| a == b)
        .count();
    assert!(same + 2 >= heads, "{same} of {heads} heads agree");
    let (a, b) = (got.kept_entries as f64, want.kept_entries as f64);
    assert!((a - b).abs() <= 0.02 * b, "kept {a} vs {b}");
}

#[test]
fn snapkv_and_adakv_keep_their_budget_and_never_evict() {
    let l = load("smollm2");
    let cfg = &l.model.cfg;
    let entry = 2 * cfg.head_dim * KvDtype::F16.bytes();
    let heads = cfg.n_layers * cfg.n_kv_heads;
    let (s, budget) = (400, 0.3);
    for kind in [KvKind::SnapKv, KvKind::AdaKv] {
        let mut settings = KvSettings::with_kind(kind);
        settings.snap.budget = budget;
        let mut c = cache(&l, settings);
        let mut ws = Workspace::default();
        c.prefill(&l.model, &mut ws, &l.essay[..s]).unwrap();
        // ceil(0.3 * 400) = 120 prompt tokens per head, window (32) included: every layer
        // keeps exactly 120 / 400 of its entries, in buffers shrunk to fit.
        let r = c.report();
        for (layer, &k) in r.layer_kept.iter().enumerate() {
            assert!((k - 0.3).abs() < 1e-12, "{kind} layer {layer}: {k}");
        }
        assert_eq!(r.kept_entries, heads * 120, "{kind}");
        assert_eq!(r.kv_bytes_allocated, r.kept_entries * entry, "{kind}");
        assert!(r.kv_bytes_allocated * 3 < r.kv_bytes_full, "{kind}");
        let sizes: Vec<usize> = c.kv().heads().iter().map(|h| h.len()).collect();
        assert!(sizes.iter().all(|&n| n >= 32), "{kind}: the window is kept");
        // SnapKV: the same count everywhere; Ada-KV moves budget between a layer's heads.
        assert_eq!(
            sizes.iter().all(|&n| n == 120),
            kind == KvKind::SnapKv,
            "{sizes:?}"
        );
        // Decoding appends to every head and evicts nothing.
        for (t, &token) in l.essay[s..s + 20].iter().enumerate() {
            let before = kept_positions(&c);
            c.decode(&l.model, &mut ws, token).unwrap();
            for (h, old) in c.kv().heads().iter().zip(&before) {
                assert_eq!(&h.positions()[..old.len()], &old[..], "{kind}");
                assert_eq!(h.positions()[old.len()..], [(s + t) as u32], "{kind}");
            }
            let r = c.report();
            assert_eq!(r.kept_entries, heads * (120 + t + 1), "{kind}");
            let slack = r.kv_bytes_allocated - r.kv_bytes_kept;
            assert!(
                slack <= 2 * DECODE_SPARE * heads * entry,
                "{kind}: slack {slack}"
            );
            assert_eq!(r.score_bytes, 0, "{kind}: no scores kept");
        }
    }
}

/// Every method of the registry as one sequence of a batch (prompts of different lengths,
/// one crossing its deferred compression point during the steps): decoding them together
/// gives each exactly the logits and the kept entries it has when decoded alone.
#[test]
fn decoding_together_equals_decoding_alone() {
    let l = load("smollm2");
    let methods = registry();
    let lens: Vec<usize> = (0..methods.len()).map(|i| 190 + 5 * i).collect();
    let mut ws = Workspace::default();
    let mut alone: Vec<CompressedCache> = Vec::new();
    for ((_, s), &n) in methods.iter().zip(&lens) {
        let mut c = cache(&l, s.clone());
        c.prefill(&l.model, &mut ws, &l.essay[..n]).unwrap();
        alone.push(c);
    }
    let mut together = alone.clone();
    for step in 0..24 {
        let tokens: Vec<u32> = lens.iter().map(|&n| l.essay[n + step]).collect();
        let mut want = Vec::new();
        for (c, &t) in alone.iter_mut().zip(&tokens) {
            want.push(c.decode(&l.model, &mut ws, t).unwrap().to_vec());
        }
        let mut refs: Vec<&mut CompressedCache> = together.iter_mut().collect();
        let mut seen = vec![false; methods.len()];
        CompressedCache::decode_batch(&l.model, &mut ws, &mut refs, &tokens, &mut |i, got| {
            let diff = got
                .iter()
                .zip(&want[i])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            // Each row's activations are quantised on their own, so a row's products do not
            // depend on the other rows of the batch: equal to the bit.
            assert!(
                diff == 0.0,
                "{} step {step}: logits differ by {diff}",
                methods[i].0
            );
            seen[i] = true;
        })
        .unwrap();
        assert!(seen.iter().all(|&s| s), "every sequence's logits delivered");
        for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
            for (ha, hb) in a.kv().heads().iter().zip(b.kv().heads()) {
                assert_eq!(
                    ha.positions(),
                    hb.positions(),
                    "{} step {step}: kept entries differ",
                    methods[i].0
                );
            }
            assert_eq!(a.compressed(), b.compressed(), "{}", methods[i].0);
        }
    }
    assert!(together
        .iter()
        .any(|c| c.stats().compressed_at == Some(210)));

    // A cache without its prompt refuses the whole batch and leaves the others unchanged.
    let before = together[1].kv().seq_len();
    let mut empty = cache(&l, forced());
    let mut refs: Vec<&mut CompressedCache> = vec![&mut together[1], &mut empty];
    let err = CompressedCache::decode_batch(&l.model, &mut ws, &mut refs, &[1, 2], &mut |_, _| {})
        .unwrap_err();
    assert!(err.to_string().contains("before prefill"), "{err}");
    assert_eq!(together[1].kv().seq_len(), before);
}

/// Gemma 3's sliding-window layers are the model's own: under every method they keep exactly
/// what their window can still see (no policy, no eviction inside it, no growth past it) and
/// report `sliding:512`; the methods work on the global layers only; `--recovery 1.0` stays the
/// engine, bit for bit, across the window's edge.
#[test]
fn gemma3_sliding_layers_keep_their_window_under_every_method() {
    let l = load("gemma3-270m");
    let cfg = &l.model.cfg;
    let (prompt, forced) = (&l.essay[..700], &l.essay[700..716]);
    let n = 716;
    let mut plain = l.model.new_cache(KvDtype::F16);
    let want = logits_of(&mut plain, &l, prompt, forced);
    let mut lossless = cache(&l, forced_settings_t1());
    assert_eq!(logits_of(&mut lossless, &l, prompt, forced), want);
    let keep = [
        "full",
        "fastgen",
        "fastgen deferred to 210 tokens",
        "window ratio",
        "h2o",
        "snapkv",
    ];
    for (name, s) in registry().into_iter().filter(|(n, _)| keep.contains(n)) {
        let mut c = cache(&l, s);
        logits_of(&mut c, &l, prompt, forced);
        let report = c.report();
        let mut global_kept = 0;
        for (layer, spec) in cfg.layers.iter().enumerate() {
            for h in 0..cfg.n_kv_heads {
                let head = c.kv().head(layer, h);
                let pos = head.positions();
                match spec.window {
                    Some(w) => {
                        let w = w as usize;
                        assert!(
                            (w..=w + WINDOW_SLACK).contains(&head.len()),
                            "{name}: layer {layer} holds {} slots (window {w})",
                            head.len()
                        );
                        // Contiguous up to the last token: nothing evicted inside the window.
                        assert_eq!(pos[pos.len() - 1] as usize, n - 1, "{name}");
                        assert_eq!(pos[pos.len() - 1] - pos[0] + 1, pos.len() as u32, "{name}");
                        assert_eq!(report.policies[layer][h], format!("sliding:{w}"), "{name}");
                    }
                    None => global_kept += head.len(),
                }
            }
        }
        let globals = cfg.layers.iter().filter(|s| s.window.is_none()).count() * cfg.n_kv_heads;
        if name == "full" {
            assert_eq!(global_kept, globals * n);
            // The mean over decode steps is a mean for the full cache too (its windows
            // evict as it decodes), not the last step's ratio.
            assert_ne!(report.pruned_ratio_mean, report.pruned_ratio, "{name}");
        } else if name != "fastgen" && name != "fastgen deferred to 210 tokens" {
            assert!(
                global_kept < globals * n,
                "{name}: the global layers were not compressed"
            );
        }
    }
}

/// FastGen forced from the first token with T = 1.
fn forced_settings_t1() -> KvSettings {
    forced().with(|s| s.fastgen.recovery = 1.0)
}

/// Budget mode on Gemma 3: the sliding layers keep their windows whatever the budget, so
/// what they hold counts against it and the global layers get the rest.
#[test]
fn gemma3_budget_counts_the_sliding_windows() {
    let l = load("gemma3-270m");
    let cfg = &l.model.cfg;
    let prompt = &l.essay[..1200];
    let all = cfg.n_layers * cfg.n_kv_heads * prompt.len();
    let held_by_windows: usize = (cfg.layers.iter())
        .filter_map(|s| s.window)
        .map(|w| cfg.n_kv_heads * (w as usize + WINDOW_SLACK).min(prompt.len()))
        .sum();
    // Half the cache: the windows alone hold about 40% of it, the three global layers the rest.
    let budget = KvBudget::Ratio(0.5);
    let mut c = cache(&l, forced().with(|s| s.fastgen.budget = Some(budget)));
    c.prefill(&l.model, &mut Workspace::default(), prompt)
        .unwrap();
    let r = c.report();
    assert!(held_by_windows < all / 2, "{held_by_windows} of {all}");
    assert_eq!(r.budget_met, Some(true));
    assert!(
        r.kept_entries <= all / 2,
        "kept {} entries, budget {}",
        r.kept_entries,
        all / 2
    );
    // The global layers were compressed to make room (they would keep the whole prompt at T=1).
    let global_kept: usize = (cfg.layers.iter().enumerate())
        .filter(|(_, s)| s.window.is_none())
        .flat_map(|(l, _)| (0..cfg.n_kv_heads).map(move |h| (l, h)))
        .map(|(l, h)| c.kv().head(l, h).len())
        .sum();
    let globals = cfg.layers.iter().filter(|s| s.window.is_none()).count() * cfg.n_kv_heads;
    assert!(global_kept < globals * prompt.len(), "{global_kept}");
}

/// A prompt fed in parts (as the server interleaves a long prompt with other sequences'
/// decode steps) gives what one prefill gives, under every method: the same last logits, the
/// same heads' choices and kept entries, and the same next step.
#[test]
fn prefill_in_parts_equals_one_prefill() {
    let l = load("smollm2");
    let prompt = &l.essay[..230];
    let mut ws = Workspace::default();
    for (name, s) in registry() {
        let mut whole = cache(&l, s.clone());
        let want = whole.prefill(&l.model, &mut ws, prompt).unwrap();
        let mut parts = cache(&l, s);
        for upto in [37, 100, 101] {
            let none = parts.prefill_part(&l.model, &mut ws, prompt, upto).unwrap();
            assert!(none.is_none(), "{name}: logits before the prompt's end");
            // Decoding in the middle of a prompt is refused and changes nothing.
            let Err(err) = parts.decode(&l.model, &mut ws, 1) else {
                panic!("{name}: decoded in the middle of a prompt");
            };
            assert!(err.to_string().contains("before prefill"), "{name}: {err}");
            assert_eq!(parts.kv().seq_len(), upto, "{name}");
        }
        let got = (parts.prefill_part(&l.model, &mut ws, prompt, prompt.len()))
            .unwrap()
            .expect("the last part gives logits");
        let diff = (got.iter().zip(&want))
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4, "{name}: last logits differ by {diff}");
        assert_eq!(whole.compressed(), parts.compressed(), "{name}");
        for step in 0..3 {
            for (ha, hb) in whole.kv().heads().iter().zip(parts.kv().heads()) {
                assert_eq!(ha.positions(), hb.positions(), "{name} step {step}");
            }
            let t = l.essay[230 + step];
            let a = whole.decode(&l.model, &mut ws, t).unwrap().to_vec();
            let b = parts.decode(&l.model, &mut ws, t).unwrap();
            let diff = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-3, "{name} step {step}: logits differ by {diff}");
        }
        // A part out of order is refused by name.
        let mut c = cache(&l, KvSettings::default());
        let err = c.prefill_part(&l.model, &mut ws, prompt, 0).unwrap_err();
        assert!(err.to_string().contains("prefill part 0..0"), "{err}");
    }
}

/// A conversation's next turn on a compressed FastGen cache: the turn runs over what the
/// heads kept (the plain engine over the same entries gives the same logits), its rows are
/// profiled over those entries exactly (against exact attention maps scattered to their
/// positions), every head's policy is chosen again from them, what was evicted stays
/// evicted, and decoding goes on.
#[test]
fn a_compressed_cache_continues_with_a_new_turn_profiled_over_its_kept_entries() {
    let l = load("smollm2");
    let cfg = &l.model.cfg;
    let group = cfg.n_heads / cfg.n_kv_heads;
    let (first, answer, end) = (200, 212, 340);
    for settings in [
        forced(),
        KvSettings::paper().with(|s| s.fastgen.compress_from = 0),
    ] {
        let mut ws = Workspace::default();
        let mut c = cache(&l, settings.clone());
        c.prefill(&l.model, &mut ws, &l.essay[..first]).unwrap();
        for &t in &l.essay[first..answer] {
            c.decode(&l.model, &mut ws, t).unwrap();
        }
        assert_eq!(c.stats().compressed_at, Some(first));
        let before = kept_positions(&c);
        let policies: Vec<_> = (0..cfg.n_layers * cfg.n_kv_heads)
            .map(|i| c.head_state(i / cfg.n_kv_heads, i % cfg.n_kv_heads).policy)
            .collect();
        // The plain engine over the same kept entries, recording the turn's queries.
        let mut plain = c.kv().clone();
        let mut rec = QueryRecorder {
            q: vec![Vec::new(); cfg.n_layers],
        };
        let turn = &l.essay[answer..end];
        let mut want = Vec::new();
        l.model
            .forward_observed(
                turn,
                &mut plain,
                &mut ws,
                turn.len() - 1,
                &mut |_, x| want = x.to_vec(),
                Some(&mut rec),
            )
            .unwrap();
        assert!(c.can_extend(turn.len()));
        assert!(c
            .extend_part(&l.model, &mut ws, turn, 50)
            .unwrap()
            .is_none());
        let Err(e) = c.decode(&l.model, &mut ws, 1) else {
            panic!("decoded in the middle of a turn");
        };
        assert!(e.to_string().contains("before prefill"), "{e}");
        let got = c
            .extend_part(&l.model, &mut ws, turn, turn.len())
            .unwrap()
            .unwrap();
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            diff < 1e-3,
            "turn logits differ from the plain engine's by {diff}"
        );
        assert_eq!(
            c.stats().compressed_at,
            Some(end),
            "chosen again at the turn's end"
        );

        let params = settings.params();
        let (fg, classes) = (&settings.fastgen, c.pos_classes());
        for layer in 0..cfg.n_layers {
            for h in 0..cfg.n_kv_heads {
                let i = layer * cfg.n_kv_heads + h;
                let held = c.kv().head(layer, h).positions();
                // Evicted earlier stays evicted.
                let old: Vec<u32> = held
                    .iter()
                    .copied()
                    .filter(|&p| (p as usize) < answer)
                    .collect();
                assert!(
                    old.iter().all(|p| before[i].contains(p)),
                    "layer {layer} head {h}"
                );
                if layer % 6 != 0 {
                    continue;
                }
                // The turn's rows over the head's entries, scattered to their positions.
                let head = plain.head(layer, h);
                let mut kb = Vec::new();
                let keys = head.keys_f32(0, head.len(), &mut kb).to_vec();
                let hd = cfg.head_dim;
                let scale = 1.0 / (hd as f32).sqrt();
                let maps: Vec<Vec<Vec<f32>>> = (0..group)
                    .map(|g| {
                        let off = (h * group + g) * hd;
                        (0..end)
                            .map(|i| {
                                let mut by_pos = vec![0.0f32; end];
                                if i < answer {
                                    return by_pos;
                                }
                                let r = i - answer;
                                let qv = &rec.q[layer][r * cfg.q_dim() + off..][..hd];
                                let seen = head.visible(i as u32);
                                let mut row: Vec<f32> = (0..seen)
                                    .map(|j| {
                                        fastgen::attention::dot(qv, &keys[j * hd..][..hd]) * scale
                                    })
                                    .collect();
                                fastgen::model::ops::softmax(&mut row);
                                for (&p, &x) in head.positions().iter().zip(&row) {
                                    by_pos[p as usize] = x;
                                }
                                by_pos
                            })
                            .collect()
                    })
                    .collect();
                let mut prof =
                    HeadProfile::from_maps_replay(&maps, answer..end, &params, fg.replay);
                prof.replay(classes, &fg.candidates, fg.recovery, fg.gqa_agg, false);
                let want = choose_policy(&prof, classes, &fg.candidates, fg.recovery, fg.gqa_agg);
                let st = c.head_state(layer, h);
                assert_eq!(st.policy, want.policy, "layer {layer} head {h}");
                let got = st.recovery.unwrap();
                assert!(
                    (got - want.recovery).abs() < 1e-4,
                    "layer {layer} head {h}: {got} vs {}",
                    want.recovery
                );
                let keep = keep_set(
                    want.policy,
                    head.positions(),
                    classes,
                    &prof.group_colsum(),
                    end,
                    &params,
                );
                let kept: Vec<u32> = (head.positions().iter().zip(&keep))
                    .filter(|(_, &k)| k)
                    .map(|(&p, _)| p)
                    .collect();
                let diff = kept.iter().filter(|p| !held.contains(p)).count()
                    + held.iter().filter(|p| !kept.contains(p)).count();
                assert!(diff <= 4, "layer {layer} head {h}: {diff} positions differ");
            }
        }
        let changed = (0..policies.len())
            .filter(|&i| c.head_state(i / cfg.n_kv_heads, i % cfg.n_kv_heads).policy != policies[i])
            .count();
        eprintln!(
            "{changed} of {} heads changed policy with the new turn",
            policies.len()
        );
        assert!(changed > 0, "the new turn changed no head's policy");
        for &t in &l.essay[end..end + 4] {
            c.decode(&l.model, &mut ws, t).unwrap();
        }
        // Methods without a rule for a second prompt refuse, and say so.
        let mut h2o = cache(&l, KvSettings::with_kind(KvKind::H2o));
        h2o.prefill(&l.model, &mut ws, &l.essay[..first]).unwrap();
        assert!(!h2o.can_extend(10));
        let e = h2o.extend_part(&l.model, &mut ws, turn, 10).unwrap_err();
        assert!(
            e.to_string().contains("cannot take a 128-token turn"),
            "{e}"
        );
    }
}
