//! `fastgen bench`: prompt and decode throughput in llama-bench's terms, optionally side by
//! side with llama-bench itself, run alternately in the same process tree.

use super::{KvArgs, ModelArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use fastgen::bench::{self, Bench, Sample, Test};
use fastgen::compress::{KvKind, KvSettings};
use fastgen::kv_cache::KvDtype;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Args)]
// Speed is compared with the plain engine first: the cache defaults to full here.
#[command(mut_arg("kv", |a| a.default_value("full")
    .help("KV-cache methods to measure, comma-separated (e.g. fastgen,full,window); each takes the other KV options")))]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    kv: KvArgs,
    /// Context depths for the decode tests (comma-separated).
    #[arg(long, default_value = "0,512,2048,4096", value_delimiter = ',')]
    depths: Vec<usize>,
    /// Prompt tokens of the prefill test (0 skips it).
    #[arg(long, default_value_t = 512)]
    prompt: usize,
    /// Tokens decoded per decode test (0 skips them).
    #[arg(long, default_value_t = 64)]
    gen: usize,
    /// Sequences decoding together in the decode tests (comma-separated, e.g. 1,4,8): one
    /// forward pass per step over one token of each; tokens/s counts all of them.
    #[arg(long, default_value = "1", value_delimiter = ',')]
    batch: Vec<usize>,
    /// Measured runs per test (after one warm-up run).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A directory holding llama.cpp's `llama-bench` (or `bin/llama-bench`): run it on the
    /// same model and tests, alternating with ours, and print the ratios. Build it with
    /// `bash scripts/build-llama-cpp.sh` (into ~/.cache/fastgen/llama.cpp).
    #[arg(long)]
    vs_llama_cpp: Option<PathBuf>,
    /// Also print tokens per CPU-second of the calling thread (with --threads 1: a measure
    /// of the code that the machine's other load disturbs less than wall time).
    #[arg(long)]
    cpu_time: bool,
}

/// Results of one test under one cache.
struct Row {
    test: Test,
    kv: String,
    /// Peak RSS while the row ran (since the process started, where it cannot be reset).
    peak_rss: Option<u64>,
    ours: Vec<Sample>,
    llama: Vec<f64>,
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let llama_bench = a
        .vs_llama_cpp
        .as_deref()
        .map(find_llama_bench)
        .transpose()?;
    let caches =
        a.kv.kv
            .split(',')
            .map(|k| {
                let s = KvArgs {
                    kv: k.trim().to_string(),
                    ..a.kv.clone()
                }
                .settings()?;
                Ok((k.trim().to_string(), s))
            })
            .collect::<Result<Vec<(String, KvSettings)>>>()?;
    // Full first at each test, so that the others can be given as ratios to it.
    let mut caches = caches;
    caches.sort_by_key(|(_, s)| s.kind != KvKind::Full);
    let loaded = a.model.load()?;
    let model = &loaded.model;
    let threads = fastgen::pool::global().threads();
    let mut tests = Vec::new();
    if a.prompt > 0 {
        tests.push(Test::Prompt { tokens: a.prompt });
    }
    if let Some(0) = a.batch.iter().min() {
        bail!("--batch: every batch needs at least 1 sequence");
    }
    if a.gen > 0 {
        for &depth in &a.depths {
            for &seqs in &a.batch {
                tests.push(Test::Gen {
                    tokens: a.gen,
                    depth,
                    seqs,
                });
            }
        }
    }
    if tests.is_empty() {
        bail!("nothing to run: --prompt and --gen are both 0");
    }
    let dtype = a.kv.dtype();
    let mut b = Bench::new(model, &tests, dtype)?;
    let wbytes = bench::weight_bytes_per_token(model);
    let model_name = model
        .path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    eprintln!(
        "{model_name}: {threads} threads, kernels {}, weights read per token {:.1} MiB",
        fastgen::quant::kernels().name,
        wbytes as f64 / (1 << 20) as f64
    );
    let mut rows: Vec<Row> = Vec::new();
    for &test in &tests {
        for (name, kv) in &caches {
            bench::reset_peak_rss();
            // Warm-up: page in the weights, size the buffers, wake the threads.
            b.run(test, kv)?;
            let mut row = Row {
                test,
                kv: name.clone(),
                peak_rss: None,
                ours: Vec::new(),
                llama: Vec::new(),
            };
            for _ in 0..a.reps {
                row.ours.push(b.run(test, kv)?);
                // llama.cpp has no compressed cache (and llama-bench no batch of
                // sequences): it runs beside the full one-sequence rows only.
                if let (Some(lb), KvKind::Full, 1) = (&llama_bench, kv.kind, test.seqs()) {
                    row.llama
                        .push(run_llama_bench(lb, &model.path, threads, test, dtype)?);
                }
            }
            row.peak_rss = bench::peak_rss_bytes();
            let median_of = |want: Test, kv: &str| {
                rows.iter()
                    .find(|r| r.test == want && r.kv == kv)
                    .map(|r| bench::summary(&tok_s(r)).0)
            };
            let full = median_of(test, "full");
            let one = match test {
                Test::Gen {
                    tokens,
                    depth,
                    seqs: 2..,
                } => median_of(
                    Test::Gen {
                        tokens,
                        depth,
                        seqs: 1,
                    },
                    name,
                ),
                _ => None,
            };
            print_row(&model_name, threads, &row, wbytes, [full, one], a.cpu_time);
            rows.push(row);
        }
    }
    if let Some(path) = &a.json {
        let doc = json!({
            "model": model_name,
            "model_path": model.path.display().to_string(),
            "threads": threads,
            "kernels": fastgen::quant::kernels().name,
            "kv": caches.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            "kv_settings": caches.iter().map(|(_, s)| s.label()).collect::<Vec<_>>(),
            "kv_dtype": a.kv.dtype().name(),
            "weight_bytes_per_token": wbytes,
            "rows": rows.iter().map(|r| row_json(r, wbytes)).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Tokens/s of our samples.
fn tok_s(r: &Row) -> Vec<f64> {
    r.ours.iter().map(|s| s.tok_s).collect()
}

/// Achieved read bandwidth of a decode test (weights + KV per token, times tokens/s), GB/s.
/// A batch reads the weights once per step for all its sequences.
fn gb_s(r: &Row, wbytes: usize) -> Option<f64> {
    match r.test {
        Test::Gen { seqs, .. } => {
            let (med, _, _) = bench::summary(&tok_s(r));
            Some((wbytes as f64 / seqs as f64 + kv_per_token(r)) * med / 1e9)
        }
        Test::Prompt { .. } => None,
    }
}

fn kv_per_token(r: &Row) -> f64 {
    r.ours.iter().map(|s| s.kv_bytes_per_token).sum::<f64>() / r.ours.len().max(1) as f64
}

fn print_row(
    model: &str,
    threads: usize,
    r: &Row,
    wbytes: usize,
    [full_tok_s, one_seq_tok_s]: [Option<f64>; 2],
    cpu_time: bool,
) {
    let (med, min, max) = bench::summary(&tok_s(r));
    let mut line = format!(
        "| {model} | {threads} | {:>14} | {:>8.1} | {:>8.1} .. {:>8.1}",
        r.test.name(),
        med,
        min,
        max
    );
    match gb_s(r, wbytes) {
        Some(g) => {
            line += &format!(
                " | {:>5.1} GB/s | KV {:>8} {:>6.1} MB/tok",
                g,
                r.kv,
                kv_per_token(r) / 1e6
            )
        }
        None => line += &format!(" |            | KV {:>8}              ", r.kv),
    }
    let last = r.ours.last().copied().unwrap_or_default();
    line += &format!(
        " | pruned {:>5.1}% | alloc {:>6.1} MiB | peak RSS {:>6.0} MiB | profile {:>6.1} ms",
        100.0 * last.pruned_ratio,
        last.kv_bytes_allocated as f64 / (1 << 20) as f64,
        r.peak_rss.unwrap_or(0) as f64 / (1 << 20) as f64,
        last.profile_ms
    );
    if let (Some(f), false) = (full_tok_s, r.kv == "full") {
        line += &format!(" | x{:.2} vs full", med / f);
    }
    if let Some(one) = one_seq_tok_s {
        line += &format!(" | x{:.2} vs one sequence", med / one);
    }
    if cpu_time {
        let cpu: Vec<f64> = r.ours.iter().map(|s| s.cpu_tok_s).collect();
        line += &format!(" | cpu {:>8.1}", bench::summary(&cpu).0);
    }
    if !r.llama.is_empty() {
        let (lm, lmin, lmax) = bench::summary(&r.llama);
        line += &format!(
            " | llama.cpp {:>8.1} ({:.1} .. {:.1}) | ratio {:.2}",
            lm,
            lmin,
            lmax,
            med / lm
        );
    }
    println!("{line} |");
}

fn row_json(r: &Row, wbytes: usize) -> serde_json::Value {
    let (med, min, max) = bench::summary(&tok_s(r));
    let last = r.ours.last().copied().unwrap_or_default();
    let mut v = json!({
        "test": r.test.name(),
        "kv": r.kv,
        "pruned_ratio": last.pruned_ratio,
        "kv_bytes_allocated": last.kv_bytes_allocated,
        "peak_rss_bytes": r.peak_rss,
        "profile_ms": last.profile_ms,
        "tok_s": med,
        "min": min,
        "max": max,
        "samples": tok_s(r),
    });
    if let Some(g) = gb_s(r, wbytes) {
        v["gb_s"] = json!(g);
        v["kv_bytes_per_token"] = json!(kv_per_token(r));
    }
    if !r.llama.is_empty() {
        let (lm, lmin, lmax) = bench::summary(&r.llama);
        v["llama_cpp"] = json!({"tok_s": lm, "min": lmin, "max": lmax, "samples": r.llama});
        v["ratio"] = json!(med / lm);
    }
    v
}

fn find_llama_bench(dir: &Path) -> Result<PathBuf> {
    for p in [dir.join("llama-bench"), dir.join("bin").join("llama-bench")] {
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "no llama-bench in {} (build it with scripts/build-llama-cpp.sh)",
        dir.display()
    )
}

/// One repetition of `test` by llama-bench; its tokens/s.
fn run_llama_bench(
    exe: &Path,
    model: &Path,
    threads: usize,
    test: Test,
    dtype: KvDtype,
) -> Result<f64> {
    let (p, n, d) = match test {
        Test::Prompt { tokens } => (tokens, 0, 0),
        Test::Gen { tokens, depth, .. } => (0, tokens, depth),
    };
    let ct = if dtype == KvDtype::F32 { "f32" } else { "f16" };
    let out = Command::new(exe)
        .arg("-m")
        .arg(model)
        .args(["-t", &threads.to_string(), "-r", "1", "-o", "json"])
        .args([
            "-p",
            &p.to_string(),
            "-n",
            &n.to_string(),
            "-d",
            &d.to_string(),
        ])
        .args(["-ctk", ct, "-ctv", ct])
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    if !out.status.success() {
        bail!(
            "llama-bench failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("llama-bench printed no JSON")?;
    v.get(0)
        .and_then(|r| r.get("avg_ts"))
        .and_then(|t| t.as_f64())
        .context("llama-bench JSON without avg_ts")
}
