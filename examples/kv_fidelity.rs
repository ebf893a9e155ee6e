//! Teacher-forced fidelity of compressed caches against the full cache, the yardstick of
//! llama-perplexity's KL section: feed a prompt, then the text's next tokens one at a time
//! through each cache, and compare every step's distribution with the full cache's.
//! Baselines are matched to each FastGen arm's kept share at the end of decoding.
//!
//! `cargo run --release --example kv_fidelity -- [MODEL] [TEXT] [PROMPT] [FORCED] [ARMS] [TS]`
//!
//! - MODEL: smollm2 (default), qwen2.5-0.5b.
//! - TEXT: `essay` (worked.txt, default) or `chat` (AlpacaEval instructions with their
//!   reference answers as a multi-turn ChatML conversation, in the model's chat template).
//! - PROMPT, FORCED: tokens of context and teacher-forced tokens (default 1024, 256).
//! - ARMS: comma-separated FastGen arms (default `paper,default`); each is run at every T
//!   and followed by window and h2o at its kept share. Arms: `paper`, `default`, and the
//!   paper plus one mechanism: `replay`, `grace`, `causal`, `mean`, or their combinations
//!   joined by `+` (e.g. `replay+grace+causal+mean`); `nobase:ARM` skips the baselines.
//! - TS: comma-separated thresholds (default 0.9,0.95,0.98).
//!
//! Each arm prints one line, and one JSON line on stdout prefixed with `JSON `.

use fastgen::chat::{ChatMessage, ChatTemplate};
use fastgen::compress::{
    Budget, CompressedCache, GqaAgg, HhScores, KvKind, KvSettings, TokenClasses,
};
use fastgen::kv_cache::KvDtype;
use fastgen::model::{Model, Workspace};
use fastgen::tokenizer::Tokenizer;
use std::sync::Arc;

fn log_softmax(l: &[f32]) -> Vec<f64> {
    let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + l.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    l.iter().map(|&x| x as f64 - lse).collect()
}

fn argmax(l: &[f32]) -> usize {
    (0..l.len())
        .max_by(|&a, &b| l[a].total_cmp(&l[b]))
        .unwrap_or(0)
}

/// AlpacaEval items as one user/assistant conversation in the model's template.
fn chat_text(model: &Model, want_tokens: usize, tok: &Tokenizer) -> fastgen::Result<String> {
    let tpl = ChatTemplate::from_gguf(model.gguf())?
        .ok_or_else(|| fastgen::Error::InvalidSetting("the model has no chat template".into()))?;
    let mut msgs = Vec::new();
    for item in fastgen::eval::data::alpaca(200)? {
        msgs.push(ChatMessage::user(item.instruction));
        msgs.push(ChatMessage::assistant(item.output));
        let text = tpl.render(&msgs, false)?;
        if tok.encode(&text)?.len() >= want_tokens {
            return Ok(text);
        }
    }
    Err(fastgen::Error::InvalidSetting(
        "not enough AlpacaEval text".into(),
    ))
}

/// A FastGen arm: the paper's settings plus the named mechanisms.
fn arm(name: &str, t: f64) -> fastgen::Result<KvSettings> {
    let mut s = match name {
        "default" => KvSettings::default(),
        _ => KvSettings::paper(),
    };
    if name != "default" && name != "paper" {
        for m in name.split('+') {
            // `replayN`, `graceN`: another W or N.
            let num = |p: &str, d: usize| {
                m.strip_prefix(p)
                    .and_then(|n| n.parse().ok().or((n.is_empty()).then_some(d)))
            };
            match m {
                "causal" => s.fastgen.hh_scores = HhScores::Causal,
                "mean" => s.fastgen.gqa_agg = GqaAgg::Mean,
                // Without the candidate that drops the local window.
                "nospf" => s
                    .fastgen
                    .candidates
                    .retain(|c| c.to_string() != "special+punct+frequent"),
                _ if num("replay", 128).is_some() => {
                    s.fastgen.replay = num("replay", 128).unwrap_or(128)
                }
                _ if num("grace", 8).is_some() => s.fastgen.grace = num("grace", 8).unwrap_or(8),
                _ => {
                    return Err(fastgen::Error::InvalidSetting(format!(
                        "unknown arm part '{m}'"
                    )))
                }
            }
        }
    }
    s.fastgen.recovery = t;
    Ok(s)
}

struct Outcome {
    logits: Vec<Vec<f32>>,
    /// Kept share at the end of decoding and averaged over steps.
    kept_end: f64,
    kept_mean: f64,
    profile_share: f64,
}

fn main() -> fastgen::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let name = arg(1, "smollm2");
    let text_kind = arg(2, "essay");
    let s: usize = arg(3, "1024").parse().unwrap_or(1024);
    let f: usize = arg(4, "256").parse().unwrap_or(256);
    let arms = arg(5, "paper,default");
    let ts: Vec<f64> = arg(6, "0.9,0.95,0.98")
        .split(',')
        .filter_map(|t| t.parse().ok())
        .collect();
    let model = Model::load(&fastgen::fetch::ensure_model(&name)?)?;
    let tok = Tokenizer::from_gguf(model.gguf())?;
    let text = match text_kind.as_str() {
        "essay" => fastgen::fetch::essay_text("worked.txt")?,
        "chat" => chat_text(&model, s + f, &tok)?,
        other => {
            return Err(fastgen::Error::InvalidSetting(format!(
                "text '{other}': expected essay or chat"
            )))
        }
    };
    let ids = tok.encode(&text)?;
    if ids.len() < s + f {
        return Err(fastgen::Error::InvalidSetting(format!(
            "the text has {} tokens, fewer than {}",
            ids.len(),
            s + f
        )));
    }
    let (prompt, forced) = (&ids[..s], &ids[s..s + f]);
    let classes = Arc::new(TokenClasses::from_tokenizer(&tok, false));
    let mut ws = Workspace::default();
    let mut run = |settings: KvSettings| -> fastgen::Result<Outcome> {
        let mut c = CompressedCache::new(
            &model.cfg,
            KvDtype::F16,
            Arc::new(settings),
            classes.clone(),
        )?;
        let mut logits = vec![c.prefill(&model, &mut ws, prompt)?];
        for &t in &forced[..f - 1] {
            logits.push(c.decode(&model, &mut ws, t)?.to_vec());
        }
        let r = c.report();
        Ok(Outcome {
            logits,
            kept_end: 1.0 - r.pruned_ratio,
            kept_mean: 1.0 - r.pruned_ratio_mean,
            profile_share: r.profile_share(),
        })
    };
    let full = run(KvSettings::with_kind(KvKind::Full))?.logits;
    let full_lp: Vec<Vec<f64>> = full.iter().map(|l| log_softmax(l)).collect();
    let report = |arm: &str, t: f64, o: &Outcome| {
        let mut kl = Vec::new();
        let mut same = 0;
        for (i, (l, p)) in o.logits.iter().zip(&full_lp).enumerate() {
            let q = log_softmax(l);
            kl.push(
                p.iter()
                    .zip(&q)
                    .map(|(a, b)| a.exp() * (a - b))
                    .sum::<f64>(),
            );
            same += usize::from(argmax(l) == argmax(&full[i]));
        }
        let n = kl.len();
        let mean = kl.iter().sum::<f64>() / n as f64;
        kl.sort_by(|a, b| a.total_cmp(b));
        let p99 = kl[(n * 99).div_ceil(100) - 1];
        let same = same as f64 / n as f64;
        println!(
            "{name} {text_kind} T={t} {arm:<28} pruned {:5.1}% (mean {:5.1}%)  KLD {:.5}  p99 {:.4}  same top {:5.1}%  profile {:.1}%",
            100.0 * (1.0 - o.kept_end),
            100.0 * (1.0 - o.kept_mean),
            mean,
            p99,
            100.0 * same,
            100.0 * o.profile_share,
        );
        println!(
            "JSON {}",
            serde_json::json!({"model": name, "text": text_kind, "t": t, "arm": arm,
                "pruned": 1.0 - o.kept_end, "pruned_mean": 1.0 - o.kept_mean,
                "kld": mean, "p99": p99, "same_top": same, "profile_share": o.profile_share})
        );
    };
    println!("{name}: {s} prompt tokens, {f} teacher-forced tokens of {text_kind}");
    // `curve` first: both baselines over a grid of budgets, for matching any arm's kept
    // share by interpolation (and for the quality-versus-kept plot).
    let arms: Vec<&str> = arms.split(',').collect();
    // `curvehi`: the upper end only (the grid's last three h2o points and beyond).
    let grid = match (arms.contains(&"curve"), arms.contains(&"curvehi")) {
        (true, _) => 0..16,
        (false, true) => 13..16,
        _ => 0..0,
    };
    {
        for i in grid {
            let keep = if i < 13 {
                0.35 + 0.05 * i as f64
            } else {
                0.95 + 0.01 * (i - 12) as f64
            };
            let w = run(
                KvSettings::with_kind(KvKind::Window).with(|s| s.window = Budget::Ratio(keep))
            )?;
            report("curve:window", 0.0, &w);
            let r = 0.18 + 0.03 * i as f64;
            let h = run(KvSettings::with_kind(KvKind::H2o).with(|s| {
                s.parts.r_local = r;
                s.parts.r_frequent = r;
            }))?;
            report("curve:h2o", 0.0, &h);
        }
    }
    for &t in &ts {
        for &a in arms.iter().filter(|&&a| !a.starts_with("curve")) {
            let (a, baselines) = match a.strip_prefix("nobase:") {
                Some(a) => (a, false),
                None => (a, true),
            };
            let o = run(arm(a, t)?)?;
            report(a, t, &o);
            if !baselines {
                continue;
            }
            // Baselines at this arm's kept share at the end of decoding: the window keeps
            // the sink and ceil(r n) recent tokens, h2o ceil(r n / 2) recent and as many
            // heavy hitters.
            let n = (s + f - 1) as f64;
            let keep = o.kept_end;
            let w = run(KvSettings::with_kind(KvKind::Window)
                .with(|s| s.window = Budget::Ratio((keep - 1.0 / n).clamp(1e-3, 1.0))))?;
            report(&format!("  window@{a}"), t, &w);
            // h2o's heavy hitters may fall inside its window, so it keeps less than
            // r_l + r_f: one secant step on the ratio brings it to within a few tokens.
            let h2o = |r: f64| {
                KvSettings::with_kind(KvKind::H2o).with(|s| {
                    s.parts.r_local = r.min(1.0);
                    s.parts.r_frequent = r.min(1.0);
                })
            };
            let mut r = keep / 2.0;
            let mut h = run(h2o(r))?;
            let mut prev: Option<(f64, f64)> = None;
            for _ in 0..3 {
                if (h.kept_end - keep).abs() <= 0.002 {
                    break;
                }
                let next = match prev {
                    // Secant through the last two (ratio, kept) points.
                    Some((r0, k0)) if (h.kept_end - k0).abs() > 1e-6 => {
                        r + (keep - h.kept_end) * (r - r0) / (h.kept_end - k0)
                    }
                    _ => r * keep / h.kept_end,
                };
                prev = Some((r, h.kept_end));
                r = next.clamp(1e-3, 1.0);
                h = run(h2o(r))?;
            }
            report(&format!("  h2o@{a}"), t, &h);
        }
    }
    Ok(())
}
