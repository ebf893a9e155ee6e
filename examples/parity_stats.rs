//! Teacher-forced agreement with llama.cpp's greedy runs (`tests/reference`), as the
//! parity test measures it, but reporting instead of failing: every step whose argmax is
//! not llama.cpp's, and the |log-probability| differences over llama.cpp's top 10.
//! For checking that a speed change keeps the numerics.
//!
//! `cargo run --release --example parity_stats [-- smollm2|qwen2.5-0.5b]`
use fastgen::kv_cache::KvDtype;
use fastgen::model::{Model, Workspace};
use std::path::PathBuf;

fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let lse = max + sum.ln() as f32;
    logits.iter().map(|&l| l - lse).collect()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as u32)
                .collect()
        })
        .unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let which = std::env::args().nth(1);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference");
    for (name, suffix) in [("smollm2", "smollm2"), ("qwen2.5-0.5b", "qwen2.5-0.5b")] {
        if which.as_deref().is_some_and(|w| w != name) {
            continue;
        }
        let model = Model::load(&fastgen::fetch::resolve_model(name)?)?;
        let mut ws = Workspace::default();
        let text = std::fs::read_to_string(dir.join(format!("greedy-{suffix}.jsonl")))?;
        let (mut steps, mut exact, mut fails, mut diffs) = (0, 0, 0, Vec::new());
        for (n, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let case: serde_json::Value = serde_json::from_str(line)?;
            let prompt = ids(&case["prompt_ids"]);
            let greedy = ids(&case["greedy_ids"]);
            let Some(ref_steps) = case["steps"].as_array() else {
                continue;
            };
            let mut cache = model.new_cache(KvDtype::F16);
            let mut logits = model.prefill(&prompt, &mut cache, &mut ws)?;
            for (i, step) in ref_steps.iter().enumerate() {
                let lp = log_softmax(&logits);
                let ours = (0..lp.len())
                    .max_by(|&a, &b| lp[a].total_cmp(&lp[b]))
                    .unwrap_or(0);
                let top: Vec<(usize, f32)> = step["top"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|p| {
                                (
                                    p[0].as_u64().unwrap_or(0) as usize,
                                    p[1].as_f64().unwrap_or(0.0) as f32,
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                steps += 1;
                let ref_id = step["id"].as_u64().unwrap_or(0) as usize;
                if ours == ref_id {
                    exact += 1;
                } else {
                    let rank = top.iter().position(|&(id, _)| id == ours);
                    // The parity test's criterion: a top-two swap within 0.4 passes.
                    let swap = rank == Some(1) && top[0].1 - top[1].1 <= 0.4;
                    fails += usize::from(!swap);
                    println!(
                        "{} {name} case {n} step {i}: ours {ours} ({:.3}, llama.cpp rank {rank:?}) vs {ref_id} ({:.3} ours); llama.cpp top {:?}",
                        if swap { "swap" } else { "FAIL" },
                        lp[ours], lp[ref_id], &top[..3.min(top.len())]
                    );
                }
                for &(id, l) in &top {
                    diffs.push((lp[id] - l).abs());
                }
                if i + 1 < ref_steps.len() {
                    logits = model.decode(greedy[i], &mut cache, &mut ws)?.to_vec();
                }
            }
        }
        diffs.sort_by(f32::total_cmp);
        let mean = diffs.iter().sum::<f32>() / diffs.len().max(1) as f32;
        let p99 = diffs.get(diffs.len() * 99 / 100).copied().unwrap_or(0.0);
        println!(
            "{name}: {steps} steps, {exact} exact, {fails} failing; top-10 |dlogprob| mean {mean:.4} p99 {p99:.4} max {:.4}",
            diffs.last().copied().unwrap_or(0.0)
        );
    }
    Ok(())
}
