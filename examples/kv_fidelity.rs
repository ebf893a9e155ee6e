//! Teacher-forced fidelity of compressed caches against the full cache, the yardstick of
//! llama-perplexity's KL section: feed a prompt, then the text's next tokens one at a time
//! through each cache, and compare every step's distribution with the full cache's.
//!
//! `cargo run --release --example kv_fidelity -- [MODEL] [PROMPT_TOKENS] [FORCED_TOKENS]`
//! (defaults: smollm2, 1000, 128; text: the essay worked.txt).

use fastgen::fastgen::{Budget, CompressedCache, KvKind, KvSettings, ProfileRows, TokenClasses};
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

fn main() -> fastgen::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map_or("smollm2", String::as_str);
    let s: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let f: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(128);
    let model = Model::load(&fastgen::fetch::ensure_model(name)?)?;
    let tok = Tokenizer::from_gguf(model.gguf())?;
    let ids = tok.encode(&fastgen::fetch::essay_text("worked.txt")?)?;
    let (prompt, forced) = (&ids[..s], &ids[s..s + f]);
    let classes = Arc::new(TokenClasses::from_tokenizer(&tok, false));
    let mut ws = Workspace::default();
    let run = |settings: KvSettings, ws: &mut Workspace| -> fastgen::Result<(Vec<Vec<f32>>, f64)> {
        let mut c = CompressedCache::new(
            &model.cfg,
            KvDtype::F16,
            Arc::new(settings),
            classes.clone(),
        )?;
        let mut out = vec![c.prefill(&model, ws, prompt)?];
        for &t in &forced[..f - 1] {
            out.push(c.decode(&model, ws, t)?.to_vec());
        }
        Ok((out, c.report().pruned_ratio_mean))
    };
    let (full, _) = run(KvSettings::with_kind(KvKind::Full), &mut ws)?;
    let full_lp: Vec<Vec<f64>> = full.iter().map(|l| log_softmax(l)).collect();
    let report = |label: &str, (logits, pruned): (Vec<Vec<f32>>, f64)| {
        let mut kl = Vec::new();
        let mut same = 0;
        let mut dnll = 0.0;
        for (i, (l, p)) in logits.iter().zip(&full_lp).enumerate() {
            let q = log_softmax(l);
            kl.push(
                p.iter()
                    .zip(&q)
                    .map(|(a, b)| a.exp() * (a - b))
                    .sum::<f64>(),
            );
            same += usize::from(argmax(l) == argmax(&full[i]));
            let t = forced[i] as usize;
            dnll += p[t] - q[t];
        }
        kl.sort_by(|a, b| a.total_cmp(b));
        let n = kl.len();
        println!(
            "{label:<44} pruned {:5.1}%  mean KLD {:.4}  p99 KLD {:.4}  same top {:5.1}%  dNLL {:+.4}",
            100.0 * pruned,
            kl.iter().sum::<f64>() / n as f64,
            kl[(n * 99).div_ceil(100) - 1],
            100.0 * same as f64 / n as f64,
            dnll / n as f64
        );
        pruned
    };
    println!("{name}: {s} prompt tokens, {f} teacher-forced tokens of worked.txt");
    // Which parts do the damage: the paper's hybrid on every head, and FastGen without the
    // candidate that drops the local window.
    report(
        "fixed:special+punct+frequent+local",
        run(
            KvSettings::with_kind("fixed:special+punct+frequent+local".parse()?),
            &mut ws,
        )?,
    );
    let no_spf = fastgen::fastgen::parse_candidates(
        "special,special+punct,special+punct+frequent+local,full",
    )?;
    report(
        "fastgen T=0.95 without special+punct+frequent",
        run(
            KvSettings {
                candidates: no_spf,
                ..KvSettings::default()
            },
            &mut ws,
        )?,
    );
    for t in [0.90, 0.95, 0.98] {
        let fg = KvSettings {
            recovery: t,
            ..KvSettings::default()
        };
        let pruned = report(&format!("fastgen T={t}"), run(fg.clone(), &mut ws)?);
        report(
            &format!("fastgen T={t} last:128"),
            run(
                KvSettings {
                    profile_rows: ProfileRows::Last(128),
                    ..fg.clone()
                },
                &mut ws,
            )?,
        );
        report(
            &format!("fastgen T={t} grace 8"),
            run(
                KvSettings {
                    frequent_grace: 8,
                    ..fg
                },
                &mut ws,
            )?,
        );
        // Baselines at FastGen's measured budget (kept share 1 - pruned).
        let keep = 1.0 - pruned;
        report(
            &format!("window at {:.0}% kept", 100.0 * keep),
            run(
                KvSettings {
                    window: Budget::Ratio(keep),
                    ..KvSettings::with_kind(KvKind::Window)
                },
                &mut ws,
            )?,
        );
        report(
            &format!("h2o at {:.0}% kept", 100.0 * keep),
            run(
                KvSettings {
                    r_local: keep / 2.0,
                    r_frequent: keep / 2.0,
                    ..KvSettings::with_kind(KvKind::H2o)
                },
                &mut ws,
            )?,
        );
    }
    Ok(())
}
