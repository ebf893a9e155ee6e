//! `fastgen eval`: what a compressed cache costs in quality, against the full cache.
//! `ppl` (teacher-forced KL divergence), `niah` (needles asked of a compressed context),
//! `agree` (AlpacaEval answers), `gsm8k` (accuracy), `longgen` (long forced generation),
//! `humaneval` (pass@1, answers run in a sandbox) and `sweep` (every method at matched
//! budgets on any of these yardsticks).

mod humaneval;

use super::{KvArgs, ModelArgs};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use fastgen::compress::{KvKind, KvSettings};
use fastgen::eval::fidelity::{compare_arms, Windows};
use fastgen::eval::needle;
use fastgen::eval::sweep::{self, SweepConfig, Task};
use fastgen::eval::{data, longgen, tasks, Engine};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    command: EvalCommand,
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Teacher-forced fidelity on prose: PPL, KL divergence and same-top rate against the
    /// full cache (llama-perplexity's KL block).
    Ppl(PplArgs),
    /// Needle in a haystack: the context is compressed before two questions are asked of it.
    Niah(NiahArgs),
    /// Greedy AlpacaEval answers, compressed against full: exact match, first divergence,
    /// ROUGE-L.
    Agree(GenArgs),
    /// GSM8K answer accuracy, full against compressed.
    Gsm8k(GenArgs),
    /// Every method at matched budgets on every yardstick: results.json, report.md, plots.
    ///
    /// Arms: the full cache; FastGen (ours and the paper's) at each T (--recoveries),
    /// compressed from the first token; the window, H2O, SnapKV and Ada-KV each set to the
    /// kept share our FastGen measured at each T. Yardsticks (--tasks, default all): ppl (teacher-forced KLD; always
    /// runs, since it fixes the baselines' budgets), niah, agree, gsm8k, humaneval (pass@1 of
    /// chat answers run in a sandboxed Python 3, which must be present) and longgen (forced
    /// long answers against the full cache's: pruned share at the end, distinct-4 ratio,
    /// ROUGE-L). A yardstick left out shows as "-" in report.md and null in results.json.
    /// Without --quick each generation yardstick is hours on two cores: per arm (25 at the
    /// default four T), HumanEval answers 164 problems in up to 512 tokens each and longgen
    /// writes 10 x 1,024 tokens.
    Sweep(SweepArgs),
    /// Long generation on LongBench-Write prompts, full against compressed: pruned ratio over
    /// time, KV bytes, degeneration (distinct-n, longest loop), agreement. End-of-generation
    /// tokens are masked until --tokens tokens are generated, so every answer has that length.
    Longgen(LonggenArgs),
    /// HumanEval pass@1, full against compressed: each greedy answer runs against the
    /// problem's tests in a sandboxed Python 3 process.
    Humaneval(humaneval::HumanevalArgs),
}

/// What every eval command shares: the model, the cache under test, where JSON goes.
#[derive(Args)]
struct Common {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    kv: KvArgs,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    precision: Precision,
}

/// How the matrix products round.
#[derive(Args, Clone, Copy)]
struct Precision {
    /// Matrix products in f32 on dequantised weights, activations not rounded to 8 bits
    /// (several times slower): differences between caches smaller than the rounding's own
    /// KL divergence (about 0.003 on SmolLM2) become measurable.
    #[arg(long)]
    exact: bool,
}

#[derive(Args)]
struct PplArgs {
    #[command(flatten)]
    common: Common,
    /// Text to evaluate on (default: the Paul Graham essays).
    #[arg(long)]
    text: Option<PathBuf>,
    /// Tokens prefilled (and compressed) per window.
    #[arg(long, default_value_t = 1024)]
    ctx: usize,
    /// Tokens fed one at a time after each prefill, each prediction compared.
    #[arg(long, default_value_t = 512)]
    eval: usize,
    /// Most windows to run.
    #[arg(long, default_value_t = 8)]
    windows: usize,
}

#[derive(Args)]
struct NiahArgs {
    #[command(flatten)]
    common: Common,
    /// Haystack lengths in tokens.
    #[arg(long, default_value = "1024,2048,4096", value_delimiter = ',')]
    lengths: Vec<usize>,
    /// Needle depths in percent of the haystack.
    #[arg(long, default_value = "0,25,50,75,100", value_delimiter = ',')]
    depths: Vec<f64>,
    /// Most tokens per answer.
    #[arg(long, default_value_t = 32)]
    max_answer: usize,
}

#[derive(Args)]
struct GenArgs {
    #[command(flatten)]
    common: Common,
    /// Number of items (from the start of the set).
    #[arg(long, default_value_t = 100)]
    n: usize,
    /// Most tokens per answer (default: 128 for agree, 256 for gsm8k).
    #[arg(long)]
    max_tokens: Option<usize>,
}

#[derive(Args)]
struct LonggenArgs {
    #[command(flatten)]
    common: Common,
    /// Number of prompts (from the start of the 60).
    #[arg(long, default_value_t = 10)]
    n: usize,
    /// Tokens generated per answer, exactly: end-of-generation tokens are masked until then.
    #[arg(long, default_value_t = 1024)]
    tokens: usize,
}

#[derive(Args)]
struct SweepArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Settings every arm starts from (--kv and --recovery are set per arm).
    #[command(flatten)]
    kv: KvArgs,
    #[command(flatten)]
    precision: Precision,
    /// Directory for results.json, report.md and the plots.
    #[arg(long, default_value = "sweep")]
    out: PathBuf,
    /// A short sweep (tens of minutes): one window, a 3-cell needle grid, a few generations
    /// (4 HumanEval problems, 2 long answers of 256 tokens).
    #[arg(long)]
    quick: bool,
    /// Yardsticks to run, comma-separated: ppl, niah, agree, gsm8k, humaneval, longgen
    /// (default: all; ppl runs whether listed or not).
    #[arg(long, value_delimiter = ',')]
    tasks: Option<Vec<Task>>,
    /// Override: FastGen's thresholds T, one arm each (and one arm of each baseline).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    recoveries: Option<Vec<f64>>,
    /// Leave out the paper's FastGen arms (one per T), which have no baselines of their own.
    #[arg(long)]
    no_paper: bool,
    /// Teacher-forced text (default: the Paul Graham essays).
    #[arg(long)]
    text: Option<PathBuf>,
    /// Override: tokens prefilled per teacher-forced window.
    #[arg(long)]
    ctx: Option<usize>,
    /// Override: tokens fed one at a time per window.
    #[arg(long)]
    eval: Option<usize>,
    /// Override: needle haystack lengths.
    #[arg(long, value_delimiter = ',')]
    niah_lengths: Option<Vec<usize>>,
    /// Override: AlpacaEval instructions for agreement.
    #[arg(long)]
    agree_n: Option<usize>,
    /// Override: GSM8K problems.
    #[arg(long)]
    gsm8k_n: Option<usize>,
    /// Override: HumanEval problems (from the start of the 164).
    #[arg(long)]
    humaneval_n: Option<usize>,
    /// Override: most tokens per HumanEval answer.
    #[arg(long)]
    humaneval_max_tokens: Option<usize>,
    /// Override: LongBench-Write prompts for long generation (from the start of the 60).
    #[arg(long)]
    longgen_n: Option<usize>,
    /// Override: tokens forced per long answer.
    #[arg(long)]
    longgen_tokens: Option<usize>,
    /// Also write results.json here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(a: EvalArgs) -> Result<()> {
    match a.command {
        EvalCommand::Ppl(a) => ppl(a),
        EvalCommand::Niah(a) => niah(a),
        EvalCommand::Agree(a) => agree(a),
        EvalCommand::Gsm8k(a) => gsm8k(a),
        EvalCommand::Sweep(a) => sweep(a),
        EvalCommand::Longgen(a) => longgen_cmd(a),
        EvalCommand::Humaneval(a) => humaneval::run(a),
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal), announced by a line.
fn bar(stage: &str, len: u64) -> ProgressBar {
    eprintln!("[{stage}]");
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} ({elapsed}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(stage.to_string());
    pb
}

fn write_json(path: Option<&Path>, doc: &Value) -> Result<()> {
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_string_pretty(doc)?)
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

fn text_of(path: Option<&Path>) -> Result<String> {
    match path {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())),
        None => Ok(data::essays()?),
    }
}

/// Runs `f` with the loaded model's engine.
fn with_engine<T>(
    model: &ModelArgs,
    kv: &KvArgs,
    precision: Precision,
    f: impl FnOnce(&Engine) -> Result<T>,
) -> Result<T> {
    let loaded = model.load()?;
    let template = loaded.chat_template(None)?;
    let mut engine = Engine::new(
        &loaded.model,
        &loaded.tokenizer,
        template.as_ref(),
        kv.dtype(),
    );
    engine.exact = precision.exact;
    f(&engine)
}

fn ppl(a: PplArgs) -> Result<()> {
    let settings = a.common.kv.settings()?;
    let windows = Windows {
        ctx: a.ctx,
        eval: a.eval,
        max_windows: a.windows,
    };
    // Checked before the model loads: a bad window fails at once.
    windows.starts(usize::MAX / 2, usize::MAX / 2)?;
    let text = text_of(a.text.as_deref())?;
    with_engine(
        &a.common.model,
        &a.common.kv,
        a.common.precision,
        |engine| {
            let tokens = engine.encode(&text)?;
            let pb = bar("ppl", 0);
            let fid = compare_arms(
                engine,
                &tokens,
                windows,
                std::slice::from_ref(&settings),
                &pb,
            )?;
            pb.finish_and_clear();
            let f = &fid[0];
            let s = f.summary().context("no positions compared")?;
            println!(
                "{}: {} positions ({} per window after {} prefilled){}",
                settings.label(),
                s.n,
                a.eval,
                a.ctx,
                if engine.exact {
                    ", exact f32 products"
                } else {
                    ""
                }
            );
            print!("{}", s.render());
            println!(
            "Pruned ratio     : {:7.3} %\nKV bytes         : {:.1} MiB allocated of {:.1} MiB full",
            100.0 * f.pruned_ratio,
            f.kv_bytes_allocated / (1 << 20) as f64,
            f.kv_bytes_full / (1 << 20) as f64
        );
            write_json(
                a.common.json.as_deref(),
                &json!({
                    "kv": settings.label(),
                    "exact": engine.exact,
                    "n": s.n,
                    "ppl_full": s.ppl_full,
                    "ppl_kv": s.ppl_kv,
                    "ln_ppl_ratio": s.ln_ppl_ratio,
                    "mean_kld": s.mean_kld,
                    "mean_kld_err": s.mean_kld_err,
                    "kld_median": s.kld_median,
                    "kld_p99": s.kld_p99,
                    "kld_p999": s.kld_p999,
                    "kld_max": s.kld_max,
                    "same_top": s.same_top,
                    "same_top_err": s.same_top_err,
                    "rms_dp": s.rms_dp,
                    "pruned_ratio": f.pruned_ratio,
                    "kv_bytes_allocated": f.kv_bytes_allocated,
                    "kv_bytes_full": f.kv_bytes_full,
                }),
            )
        },
    )
}

fn full() -> KvSettings {
    KvSettings::with_kind(KvKind::Full)
}

fn niah(a: NiahArgs) -> Result<()> {
    let settings = a.common.kv.settings()?;
    if a.lengths.is_empty() || a.depths.is_empty() {
        bail!("--lengths and --depths need at least one value each");
    }
    if let Some(d) = a.depths.iter().find(|d| !(0.0..=100.0).contains(*d)) {
        bail!("--depths: {d} is not a percentage in [0, 100]");
    }
    if a.lengths.contains(&0) || a.max_answer == 0 {
        bail!("--lengths and --max-answer must be at least 1");
    }
    let prose = data::essays()?;
    with_engine(
        &a.common.model,
        &a.common.kv,
        a.common.precision,
        |engine| {
            let pb = bar(
                "building haystacks",
                (a.lengths.len() * a.depths.len()) as u64,
            );
            let mut prompts = Vec::new();
            for &l in &a.lengths {
                for &d in &a.depths {
                    prompts.push(needle::prompt(engine, &prose, l, d)?);
                    pb.inc(1);
                }
            }
            pb.finish_and_clear();
            let pb = bar("niah: full", prompts.len() as u64);
            let f = needle::run(engine, &full(), &prompts, a.max_answer, &pb)?;
            pb.finish_and_clear();
            let pb = bar(&format!("niah: {}", settings.label()), prompts.len() as u64);
            let k = needle::run(engine, &settings, &prompts, a.max_answer, &pb)?;
            pb.finish_and_clear();
            println!("full against {}", settings.label());
            print!("{}", needle::render_grid(&f, &k));
            let (fh, q) = needle::hits(&f);
            let (kh, _) = needle::hits(&k);
            println!("hits: full {fh}/{q}, {} {kh}/{q}", settings.label());
            write_json(
                a.common.json.as_deref(),
                &json!({"kv": settings.label(), "questions": q, "hits_full": fh, "hits_kv": kh,
                    "full": f, "compressed": k}),
            )
        },
    )
}

/// Token ids of one answer per prompt.
type Answers = Vec<Vec<u32>>;

/// Full-cache and compressed answers to `prompts`.
fn both_answers(
    engine: &Engine,
    settings: &KvSettings,
    prompts: &[Vec<u32>],
    max_tokens: usize,
) -> Result<(Answers, Answers)> {
    let pb = bar("full", prompts.len() as u64);
    let f = tasks::answers(engine, &full(), prompts, max_tokens, &pb)?;
    pb.finish_and_clear();
    let pb = bar(&settings.label(), prompts.len() as u64);
    let k = tasks::answers(engine, settings, prompts, max_tokens, &pb)?;
    pb.finish_and_clear();
    Ok((f, k))
}

fn check_gen(a: &GenArgs, default_max: usize) -> Result<(KvSettings, usize)> {
    if a.n == 0 {
        bail!("--n must be at least 1");
    }
    let max = a.max_tokens.unwrap_or(default_max);
    if max == 0 {
        bail!("--max-tokens must be at least 1");
    }
    Ok((a.common.kv.settings()?, max))
}

fn agree(a: GenArgs) -> Result<()> {
    let (settings, max) = check_gen(&a, 128)?;
    let items = data::alpaca(a.n)?;
    with_engine(
        &a.common.model,
        &a.common.kv,
        a.common.precision,
        |engine| {
            let prompts = tasks::alpaca_prompts(engine, &items)?;
            let (f, k) = both_answers(engine, &settings, &prompts, max)?;
            let g = tasks::agreement(engine, &f, &k).context("no answers")?;
            println!(
                "{} against full on {} AlpacaEval instructions (up to {max} tokens):\n\
             exact match {:.1} %, mean first divergence at token {:.1}, ROUGE-L F1 {:.3}",
                settings.label(),
                g.n,
                100.0 * g.exact_match,
                g.first_divergence,
                g.rouge_l
            );
            let mut doc = serde_json::to_value(g)?;
            doc["kv"] = json!(settings.label());
            write_json(a.common.json.as_deref(), &doc)
        },
    )
}

fn gsm8k(a: GenArgs) -> Result<()> {
    let (settings, max) = check_gen(&a, 256)?;
    let cases = data::gsm8k(a.n)?;
    with_engine(
        &a.common.model,
        &a.common.kv,
        a.common.precision,
        |engine| {
            let prompts = tasks::gsm8k_prompts(engine, &cases)?;
            let (f, k) = both_answers(engine, &settings, &prompts, max)?;
            let (cf, ck) = (
                tasks::gsm8k_correct(engine, &cases, &f),
                tasks::gsm8k_correct(engine, &cases, &k),
            );
            let count = |v: &[bool]| v.iter().filter(|&&c| c).count();
            println!(
                "GSM8K, {} problems (up to {max} tokens): full {}/{} ({:.1} %), {} {}/{} ({:.1} %)",
                cases.len(),
                count(&cf),
                cases.len(),
                100.0 * tasks::share(&cf),
                settings.label(),
                count(&ck),
                cases.len(),
                100.0 * tasks::share(&ck)
            );
            write_json(
                a.common.json.as_deref(),
                &json!({"kv": settings.label(), "n": cases.len(),
                    "accuracy_full": tasks::share(&cf), "accuracy_kv": tasks::share(&ck),
                    "correct_full": cf, "correct_kv": ck}),
            )
        },
    )
}

fn longgen_cmd(a: LonggenArgs) -> Result<()> {
    if a.n == 0 {
        bail!("--n must be at least 1");
    }
    if a.tokens < 4 {
        bail!("--tokens must be at least 4 (distinct-4 needs four tokens)");
    }
    let settings = a.common.kv.settings()?;
    let items = data::longbench_write(a.n)?;
    let t0 = std::time::Instant::now();
    with_engine(
        &a.common.model,
        &a.common.kv,
        a.common.precision,
        |engine| {
            let prompts = longgen::prompts(engine, &items)?;
            longgen::check_context(engine, &prompts, a.tokens)?;
            let len = (prompts.len() * a.tokens) as u64;
            let pb = bar("longgen: full", len);
            let f = longgen::run_arm(engine, &full(), &prompts, a.tokens, &pb)?;
            pb.finish_and_clear();
            let pb = bar(&format!("longgen: {}", settings.label()), len);
            let k = longgen::run_arm(engine, &settings, &prompts, a.tokens, &pb)?;
            pb.finish_and_clear();
            let results = longgen::compare(engine, &items, &prompts, &f, &k)?;
            let s = longgen::summarise(&results).context("no prompts")?;
            print!(
                "{}",
                longgen::render(&settings.label(), a.tokens, &s, &results)
            );
            let secs = t0.elapsed().as_secs_f64();
            println!("wall time {:.1} min", secs / 60.0);
            write_json(
                a.common.json.as_deref(),
                &json!({"kv": settings.label(), "tokens": a.tokens,
                    "sample_every": longgen::SAMPLE_EVERY, "eog_masked": true,
                    "wall_s": secs, "summary": s, "prompts": results}),
            )
        },
    )
}

/// The sweep's configuration: `--quick` or the full one, with the overrides.
fn sweep_config(a: &SweepArgs) -> Result<SweepConfig> {
    let base = a.kv.settings()?;
    let mut cfg = if a.quick {
        SweepConfig::quick(base)
    } else {
        SweepConfig::full(base)
    };
    cfg.windows.ctx = a.ctx.unwrap_or(cfg.windows.ctx);
    cfg.windows.eval = a.eval.unwrap_or(cfg.windows.eval);
    cfg.agree_n = a.agree_n.unwrap_or(cfg.agree_n);
    cfg.gsm8k_n = a.gsm8k_n.unwrap_or(cfg.gsm8k_n);
    cfg.humaneval_n = a.humaneval_n.unwrap_or(cfg.humaneval_n);
    cfg.humaneval_max_tokens = a.humaneval_max_tokens.unwrap_or(cfg.humaneval_max_tokens);
    cfg.longgen_n = a.longgen_n.unwrap_or(cfg.longgen_n);
    cfg.longgen_tokens = a.longgen_tokens.unwrap_or(cfg.longgen_tokens);
    if let Some(v) = &a.niah_lengths {
        cfg.niah_lengths = v.clone();
    }
    if let Some(v) = &a.recoveries {
        cfg.recoveries = v.clone();
    }
    if let Some(v) = &a.tasks {
        cfg.tasks = v.clone();
    }
    cfg.with_paper &= !a.no_paper;
    Ok(cfg)
}

fn sweep(a: SweepArgs) -> Result<()> {
    let cfg = sweep_config(&a)?;
    // Checked before the model loads, the sandbox (Python 3) included.
    cfg.validate()?;
    let sandbox = sweep::sandbox(&cfg)?;
    let text = text_of(a.text.as_deref())?;
    let prose = data::essays()?;
    let t0 = std::time::Instant::now();
    with_engine(&a.model, &a.kv, a.precision, |engine| {
        let tokens = engine.encode(&text)?;
        let results = sweep::run(
            engine,
            &cfg,
            sandbox.as_ref(),
            &tokens,
            &prose,
            &|stage, len| bar(stage, len),
        )?;
        let name = engine
            .model
            .path
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        let files = sweep::write_outputs(engine, &a.out, &name, &cfg, &results, &tokens)?;
        print!("{}", sweep::report_md(&name, &cfg, &results));
        eprintln!(
            "wrote {} in {} ({:.1} min)",
            files.join(", "),
            a.out.display(),
            t0.elapsed().as_secs_f64() / 60.0
        );
        write_json(
            a.json.as_deref(),
            &sweep::results_json(&name, &cfg, &results),
        )
    })
}
