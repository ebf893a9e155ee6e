//! `fastgen eval sweep`: the full cache, FastGen at several T, and the window, H2O, SnapKV
//! and Ada-KV baselines each set to the kept budget FastGen measured at each T (matched
//! budgets), on every yardstick; writes `results.json`, `report.md` (shaped like the paper's
//! Table 1) and the plots.
//!
//! Budgets are measured on the teacher-forced prose (FastGen's kept share averaged over the
//! decode steps) and passed to the baselines as ratios of the sequence, so they scale with
//! every other task's length. The window keeps the sink and a recent window of that share;
//! H2O's two parts overlap, so their share is calibrated on the first window's prompt.
//! SnapKV and Ada-KV keep that share of the prompt; they evict nothing while decoding, so
//! the kept share they report (measured, like every arm's) is larger than FastGen's.

use super::fidelity::{compare_arms, ArmFidelity, Windows};
use super::metrics::KldSummary;
use super::needle::{self, CellResult, NeedlePrompt};
use super::plot::{draw_quality, Point};
use super::tasks::{self, Agreement};
use super::{data, Engine};
use crate::error::{Error, Result};
use crate::fastgen::plot::{draw_policy_map, MapSpec};
use crate::fastgen::{Budget, KvKind, KvSettings};
use indicatif::ProgressBar;
use serde_json::{json, Value};
use std::path::Path;

/// What a sweep runs.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// Settings every arm starts from (ratios, GQA aggregation, dtype-independent options).
    pub base: KvSettings,
    /// FastGen's thresholds, one arm each (and one window and one H2O arm at its budget).
    pub recoveries: Vec<f64>,
    /// Also run the paper-faithful FastGen (`--kv fastgen-paper`) at each T.
    pub with_paper: bool,
    pub windows: Windows,
    pub niah_lengths: Vec<usize>,
    pub niah_depths: Vec<f64>,
    pub niah_max_answer: usize,
    pub agree_n: usize,
    pub agree_max_tokens: usize,
    pub gsm8k_n: usize,
    pub gsm8k_max_tokens: usize,
}

impl SweepConfig {
    /// The full sweep (hours on two cores).
    pub fn full(base: KvSettings) -> SweepConfig {
        SweepConfig {
            base,
            recoveries: vec![0.90, 0.95, 0.98, 0.99],
            with_paper: true,
            windows: Windows {
                ctx: 1024,
                eval: 512,
                max_windows: 8,
            },
            niah_lengths: vec![1024, 2048, 4096],
            niah_depths: vec![0.0, 25.0, 50.0, 75.0, 100.0],
            niah_max_answer: 32,
            agree_n: 100,
            agree_max_tokens: 128,
            gsm8k_n: 100,
            gsm8k_max_tokens: 256,
        }
    }

    /// Minutes on two cores: one window, a small needle grid, a few generations.
    pub fn quick(base: KvSettings) -> SweepConfig {
        SweepConfig {
            windows: Windows {
                ctx: 1024,
                eval: 128,
                max_windows: 1,
            },
            niah_lengths: vec![1024],
            niah_depths: vec![0.0, 50.0, 100.0],
            niah_max_answer: 24,
            agree_n: 8,
            agree_max_tokens: 48,
            gsm8k_n: 5,
            gsm8k_max_tokens: 160,
            ..SweepConfig::full(base)
        }
    }
}

/// One arm's settings and what it is called.
#[derive(Debug, Clone)]
pub struct Arm {
    /// `full`, `fastgen`, `fastgen-paper`, `window`, `h2o`, `snapkv` or `adakv`.
    pub method: String,
    /// FastGen's T, or the T whose budget a baseline is matched to.
    pub recovery: Option<f64>,
    pub settings: KvSettings,
}

/// The window baseline keeping about `kept` of the sequence: the sink plus a recent window.
fn window_arm(base: &KvSettings, kept: f64, t: f64) -> Arm {
    Arm {
        method: "window".into(),
        recovery: Some(t),
        settings: KvSettings {
            kind: KvKind::Window,
            window: Budget::Ratio(kept.clamp(1e-3, 1.0)),
            ..base.clone()
        },
    }
}

/// SnapKV or Ada-KV keeping `kept` of the prompt per head (their window included).
fn snap_arm(base: &KvSettings, kind: KvKind, kept: f64, t: f64) -> Arm {
    let mut settings = KvSettings {
        kind,
        ..base.clone()
    };
    settings.snap.budget = kept.clamp(1e-3, 1.0);
    Arm {
        method: kind.to_string(),
        recovery: Some(t),
        settings,
    }
}

/// H2O with local and frequent parts of `x` of the sequence each.
fn h2o_settings(base: &KvSettings, x: f64) -> KvSettings {
    KvSettings {
        kind: KvKind::H2o,
        r_local: x.clamp(0.0, 1.0),
        r_frequent: x.clamp(0.0, 1.0),
        ..base.clone()
    }
}

/// H2O keeping about `kept` of `ctx` after its prefill. Heavy hitters are often recent, so
/// the two parts overlap and `x + x` overshoots the union's share only sometimes: the share
/// `x` of each part is found by bisection on `[kept / 2, kept]` (the union keeps at least
/// `x` and at most `2 x`).
fn h2o_arm(engine: &Engine, base: &KvSettings, ctx: &[u32], kept: f64, t: f64) -> Result<Arm> {
    let mut ws = engine.workspace();
    let (mut lo, mut hi) = (kept / 2.0, kept);
    for _ in 0..CALIBRATION_STEPS {
        let mid = (lo + hi) / 2.0;
        let mut c = engine.cache(&h2o_settings(base, mid))?;
        c.prefill(engine.model, &mut ws, ctx)?;
        if 1.0 - c.pruned_ratio() < kept {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(Arm {
        method: "h2o".into(),
        recovery: Some(t),
        settings: h2o_settings(base, (lo + hi) / 2.0),
    })
}

/// Bisection steps of the H2O budget (the share is found to within `kept / 128`).
const CALIBRATION_STEPS: usize = 6;

/// One arm's results.
#[derive(Debug, Clone)]
pub struct ArmResult {
    pub arm: Arm,
    pub fidelity: ArmFidelity,
    pub kld: KldSummary,
    pub niah: Vec<CellResult>,
    pub agree: Agreement,
    pub gsm8k: Vec<bool>,
}

/// Progress bars by stage name and length (hidden ones in tests).
pub type Progress<'a> = &'a dyn Fn(&str, u64) -> ProgressBar;

/// Runs the sweep on `tokens` (the teacher-forced text) and `prose` (the haystack).
pub fn run(
    engine: &Engine,
    cfg: &SweepConfig,
    tokens: &[u32],
    prose: &str,
    progress: Progress,
) -> Result<Vec<ArmResult>> {
    if cfg.recoveries.is_empty() {
        return Err(Error::InvalidSetting("a sweep needs at least one T".into()));
    }
    let fastgen: Vec<Arm> = cfg
        .recoveries
        .iter()
        .map(|&t| Arm {
            method: "fastgen".into(),
            recovery: Some(t),
            // The sweep measures the method per byte: compressed from the prompt on, never
            // deferred (`eval agree` and `eval longgen` with the defaults measure the default).
            settings: KvSettings {
                kind: KvKind::FastGen,
                recovery: t,
                compress_from: 0,
                ..cfg.base.clone()
            },
        })
        .collect();
    // The paper's FastGen at the same T, for comparison with ours: drawn at its own kept
    // share, with no baselines of its own (the curves show where it lies against theirs).
    let paper: Vec<Arm> = match cfg.with_paper {
        true => (cfg.recoveries.iter())
            .map(|&t| Arm {
                method: "fastgen-paper".into(),
                recovery: Some(t),
                settings: KvSettings {
                    recovery: t,
                    ..KvSettings::paper()
                },
            })
            .collect(),
        false => Vec::new(),
    };
    for a in fastgen.iter().chain(&paper) {
        a.settings.validate()?;
    }
    let full = Arm {
        method: "full".into(),
        recovery: None,
        settings: KvSettings::with_kind(KvKind::Full),
    };
    // Stage 1: FastGen's fidelity, which fixes the baselines' budgets.
    let settings = |arms: &[Arm]| arms.iter().map(|a| a.settings.clone()).collect::<Vec<_>>();
    let pb = progress("ppl: full + fastgen", 0);
    let stage1: Vec<Arm> = fastgen.iter().chain(&paper).cloned().collect();
    let mut fid = compare_arms(engine, tokens, cfg.windows, &settings(&stage1), &pb)?;
    pb.finish();
    let mut arms = stage1;
    let pb = progress("matching budgets", fastgen.len() as u64);
    let first_ctx = &tokens[..cfg.windows.ctx.min(tokens.len())];
    for (a, f) in fastgen.iter().zip(&fid) {
        let t = a.recovery.unwrap_or(1.0);
        arms.push(window_arm(&cfg.base, f.kept_ratio(), t));
        arms.push(h2o_arm(engine, &cfg.base, first_ctx, f.kept_ratio(), t)?);
        for kind in [KvKind::SnapKv, KvKind::AdaKv] {
            arms.push(snap_arm(&cfg.base, kind, f.kept_ratio(), t));
        }
        pb.inc(1);
    }
    pb.finish();
    let pb = progress("ppl: full + baselines", 0);
    fid.extend(compare_arms(
        engine,
        tokens,
        cfg.windows,
        &settings(&arms[fastgen.len() + paper.len()..]),
        &pb,
    )?);
    pb.finish();
    // The full cache against itself, by definition: KLD 0, same top everywhere.
    let full_fid = ArmFidelity {
        rows: fid[0]
            .rows
            .iter()
            .map(|r| super::metrics::TokenCompare {
                kld: 0.0,
                same_top: true,
                p_kv: r.p_full,
                nll_kv: r.nll_full,
                ..*r
            })
            .collect(),
        pruned_ratio: 0.0,
        kv_bytes_allocated: fid[0].kv_bytes_full,
        kv_bytes_full: fid[0].kv_bytes_full,
        profile_ms: 0.0,
    };
    arms.insert(0, full);
    fid.insert(0, full_fid);

    // Stage 2: needles, asked of each arm's compressed context.
    let pb = progress(
        "niah: building haystacks",
        (cfg.niah_lengths.len() * cfg.niah_depths.len()) as u64,
    );
    let mut prompts: Vec<NeedlePrompt> = Vec::new();
    for &l in &cfg.niah_lengths {
        for &d in &cfg.niah_depths {
            prompts.push(needle::prompt(engine, prose, l, d)?);
            pb.inc(1);
        }
    }
    pb.finish();
    let pb = progress("niah", (prompts.len() * arms.len()) as u64);
    let niah = arms
        .iter()
        .map(|a| needle::run(engine, &a.settings, &prompts, cfg.niah_max_answer, &pb))
        .collect::<Result<Vec<_>>>()?;
    pb.finish();

    // Stage 3: AlpacaEval agreement and GSM8K, the full cache's answers first.
    let alpaca = tasks::alpaca_prompts(engine, &data::alpaca(cfg.agree_n)?)?;
    let cases = data::gsm8k(cfg.gsm8k_n)?;
    let gsm = tasks::gsm8k_prompts(engine, &cases)?;
    let pb = progress(
        "agree + gsm8k",
        ((alpaca.len() + gsm.len()) * arms.len()) as u64,
    );
    let mut results = Vec::new();
    let mut full_answers: Option<Vec<Vec<u32>>> = None;
    for ((arm, f), n) in arms.into_iter().zip(fid).zip(niah) {
        let a = tasks::answers(engine, &arm.settings, &alpaca, cfg.agree_max_tokens, &pb)?;
        let g = tasks::answers(engine, &arm.settings, &gsm, cfg.gsm8k_max_tokens, &pb)?;
        let fa = full_answers.get_or_insert_with(|| a.clone());
        let agree = tasks::agreement(engine, fa, &a).unwrap_or(Agreement {
            n: 0,
            exact_match: 0.0,
            first_divergence: 0.0,
            rouge_l: 0.0,
        });
        let kld = f.summary().ok_or_else(|| {
            Error::InvalidSetting("no positions were compared (empty text?)".into())
        })?;
        results.push(ArmResult {
            arm,
            fidelity: f,
            kld,
            niah: n,
            agree,
            gsm8k: tasks::gsm8k_correct(engine, &cases, &g),
        });
    }
    pb.finish();
    Ok(results)
}

fn label(a: &Arm) -> String {
    match (a.method.as_str(), a.recovery) {
        ("fastgen" | "fastgen-paper", Some(t)) => format!("{} T={t:.2}", a.method),
        (m, Some(t)) => format!("{m} @ fastgen T={t:.2} budget"),
        (m, None) => m.to_string(),
    }
}

/// `results.json`: the configuration and every arm's numbers.
pub fn results_json(model: &str, cfg: &SweepConfig, results: &[ArmResult]) -> Value {
    json!({
        "model": model,
        "config": {
            "recoveries": cfg.recoveries,
            "ctx": cfg.windows.ctx,
            "eval": cfg.windows.eval,
            "windows": cfg.windows.max_windows,
            "niah_lengths": cfg.niah_lengths,
            "niah_depths": cfg.niah_depths,
            "agree_n": cfg.agree_n,
            "agree_max_tokens": cfg.agree_max_tokens,
            "gsm8k_n": cfg.gsm8k_n,
            "gsm8k_max_tokens": cfg.gsm8k_max_tokens,
        },
        "arms": results.iter().map(|r| {
            let (hits, asked) = needle::hits(&r.niah);
            json!({
                "arm": label(&r.arm),
                "method": r.arm.method,
                "recovery": r.arm.recovery,
                "settings": r.arm.settings.label(),
                "pruned_ratio": r.fidelity.pruned_ratio,
                "kv_bytes_allocated": r.fidelity.kv_bytes_allocated,
                "kv_bytes_full": r.fidelity.kv_bytes_full,
                "profile_ms": r.fidelity.profile_ms,
                "ppl": r.kld,
                "niah": {"hits": hits, "questions": asked, "cells": r.niah},
                "agree": r.agree,
                "gsm8k": {"correct": r.gsm8k.iter().filter(|&&c| c).count(), "n": r.gsm8k.len(),
                          "accuracy": tasks::share(&r.gsm8k)},
            })
        }).collect::<Vec<_>>(),
    })
}

/// `report.md`: one row per arm, shaped like the paper's Table 1.
pub fn report_md(model: &str, cfg: &SweepConfig, results: &[ArmResult]) -> String {
    let w = cfg.windows;
    let mut s = format!(
        "# FastGen sweep: {model}\n\n\
         Teacher-forced: {} window(s) of {} prefilled + {} fed tokens of the essays. \
         Needles: lengths {:?}, depths {:?} (2 questions each). Agreement: {} AlpacaEval \
         instructions, up to {} tokens. GSM8K: {} problems, up to {} tokens. Baselines are set to \
         the kept share FastGen measured at the T in their row (snapkv and adakv: of the prompt; \
         they keep every decoded token, so their pruned share is smaller).\n\n\
         | arm | T | KV MiB | pruned % | mean KLD | same top % | NIAH hits | exact match % | ROUGE-L | first div. | GSM8K |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
        w.max_windows,
        w.ctx,
        w.eval,
        cfg.niah_lengths,
        cfg.niah_depths,
        cfg.agree_n,
        cfg.agree_max_tokens,
        cfg.gsm8k_n,
        cfg.gsm8k_max_tokens
    );
    for r in results {
        let (hits, asked) = needle::hits(&r.niah);
        let correct = r.gsm8k.iter().filter(|&&c| c).count();
        s += &format!(
            "| {} | {} | {:.1} | {:.1} | {:.4} | {:.1} | {hits}/{asked} | {:.0} | {:.3} | {:.1} | {correct}/{} |\n",
            r.arm.method,
            r.arm.recovery.map_or("-".into(), |t| format!("{t:.2}")),
            r.fidelity.kv_bytes_allocated / (1 << 20) as f64,
            100.0 * r.fidelity.pruned_ratio,
            r.kld.mean_kld,
            100.0 * r.kld.same_top,
            100.0 * r.agree.exact_match,
            r.agree.rouge_l,
            r.agree.first_divergence,
            r.gsm8k.len(),
        );
    }
    s += "\nKV MiB: allocated at the end of a teacher-forced window (full cache: all of it). \
          Agreement columns compare each arm's greedy answers with the full cache's.\n";
    if let Some(full) = results.first() {
        s += "\n## Needle grid (hits of 2, full/arm)\n\n";
        for r in &results[1..] {
            s += &format!(
                "{}\n```\n{}```\n",
                label(&r.arm),
                needle::render_grid(&full.niah, &r.niah)
            );
        }
    }
    s
}

/// Writes `results.json`, `report.md`, `quality.svg/png` and `policy-map.svg/png` into
/// `dir`. The policy map is FastGen's at the T nearest 0.95, on the first window's context.
pub fn write_outputs(
    engine: &Engine,
    dir: &Path,
    model: &str,
    cfg: &SweepConfig,
    results: &[ArmResult],
    tokens: &[u32],
) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| Error::io(&p, e))
    };
    let doc = results_json(model, cfg, results);
    write(
        "results.json",
        serde_json::to_string_pretty(&doc).unwrap_or_default(),
    )?;
    write("report.md", report_md(model, cfg, results))?;
    let mut files = vec!["results.json".to_string(), "report.md".to_string()];
    let points: Vec<Point> = results
        .iter()
        .map(|r| {
            let (h, q) = needle::hits(&r.niah);
            Point {
                method: r.arm.method.clone(),
                kept: 1.0 - r.fidelity.pruned_ratio,
                mean_kld: r.kld.mean_kld,
                same_top: r.kld.same_top,
                niah: (q > 0).then(|| h as f64 / q as f64),
            }
        })
        .collect();
    let png = draw_quality(
        &points,
        &format!("{model}: quality against kept KV fraction"),
        &dir.join("quality.svg"),
        &dir.join("quality.png"),
    )?;
    if png {
        files.push("quality.svg".into());
        files.push("quality.png".into());
    }
    let t = cfg
        .recoveries
        .iter()
        .copied()
        .min_by(|a, b| (a - 0.95).abs().total_cmp(&(b - 0.95).abs()))
        .unwrap_or(0.95);
    let settings = KvSettings {
        kind: KvKind::FastGen,
        recovery: t,
        ..cfg.base.clone()
    };
    let ctx = &tokens[..cfg.windows.ctx.min(tokens.len())];
    let mut cache = engine.cache(&settings)?;
    cache.prefill(engine.model, &mut engine.workspace(), ctx)?;
    let report = cache.report();
    let shortfall = cache.head_shortfalls();
    let spec = MapSpec {
        report: &report,
        title: format!("{model}: fastgen T={t}, {} prompt tokens", ctx.len()),
        order: settings.candidates.iter().map(|p| p.to_string()).collect(),
        shortfall,
    };
    draw_policy_map(
        &spec,
        &dir.join("policy-map.svg"),
        &dir.join("policy-map.png"),
    )?;
    files.push("policy-map.svg".into());
    files.push("policy-map.png".into());
    Ok(files)
}
