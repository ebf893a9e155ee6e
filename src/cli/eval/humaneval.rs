//! `fastgen eval humaneval`: HumanEval pass@1 of greedy answers, full cache against the cache
//! under test, each answer run against the problem's tests in a sandboxed Python process.

use super::{bar, full, with_engine, write_json, Common};
use anyhow::{bail, Result};
use clap::Args;
use fastgen::compress::{KvKind, KvSettings};
use fastgen::eval::humaneval::sandbox::{Limits, Sandbox};
use fastgen::eval::humaneval::{self as he, Answer, Attempt, Comparison, Format, Problem};
use fastgen::eval::Engine;
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(Args)]
pub(super) struct HumanevalArgs {
    #[command(flatten)]
    common: Common,
    /// Number of problems (from the start of the set; 164 in all).
    #[arg(long, default_value_t = 164)]
    n: usize,
    /// Most tokens per answer.
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    /// Continue the plain prompt text instead of asking in a chat turn (scores lower on the
    /// instruct models: see src/eval/humaneval.rs).
    #[arg(long)]
    raw: bool,
    /// Seconds each answer's tests may run before the process is killed.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

/// One arm: its answers and their test runs.
struct Arm {
    answers: Vec<Answer>,
    attempts: Vec<Attempt>,
}

impl Arm {
    fn solved(&self) -> Vec<bool> {
        self.attempts.iter().map(|a| a.passed).collect()
    }
}

fn run_arm(
    engine: &Engine,
    sandbox: &Sandbox,
    settings: &KvSettings,
    problems: &[Problem],
    a: &HumanevalArgs,
    format: Format,
) -> Result<Arm> {
    let label = settings.label();
    let pb = bar(
        &format!("humaneval answers: {label}"),
        problems.len() as u64,
    );
    let answers = he::answers(engine, settings, problems, format, a.max_tokens, &pb)?;
    pb.finish_and_clear();
    let pb = bar(&format!("humaneval tests: {label}"), problems.len() as u64);
    let attempts = he::check(sandbox, problems, format, &answers, &pb)?;
    pb.finish_and_clear();
    Ok(Arm { answers, attempts })
}

pub(super) fn run(a: HumanevalArgs) -> Result<()> {
    let t0 = Instant::now();
    if a.n == 0 || a.max_tokens == 0 {
        bail!("--n and --max-tokens must be at least 1");
    }
    if !(a.timeout > 0.0 && a.timeout <= 600.0) {
        bail!("--timeout must be in (0, 600] seconds, not {}", a.timeout);
    }
    let settings = a.common.kv.settings()?;
    let format = if a.raw { Format::Raw } else { Format::Chat };
    // Python and the sandbox are checked before the model loads.
    let sandbox = Sandbox::new(Limits {
        wall: Duration::from_secs_f64(a.timeout),
        ..Limits::default()
    })?;
    let problems = he::problems(a.n)?;
    with_engine(
        &a.common.model,
        &a.common.kv,
        a.common.precision,
        |engine| {
            let f = run_arm(engine, &sandbox, &full(), &problems, &a, format)?;
            // The full cache under test is the full arm itself: not run twice.
            let k = if settings.kind == KvKind::Full {
                None
            } else {
                Some(run_arm(engine, &sandbox, &settings, &problems, &a, format)?)
            };
            let k_ref = k.as_ref().unwrap_or(&f);
            let cmp = Comparison::new(&problems, &f.solved(), &k_ref.solved());
            let wall = t0.elapsed().as_secs_f64();
            print!(
                "{}",
                report(&a, format, &settings, &sandbox, &cmp, &f, k.as_ref(), wall)
            );
            let pruned = mean(k_ref.answers.iter().map(|x| x.pruned_ratio));
            let per_problem: Vec<_> = problems
                .iter()
                .zip(f.attempts.iter().zip(&k_ref.attempts))
                .map(|(p, (x, y))| json!({"task_id": p.task_id, "full": x, "kv": y}))
                .collect();
            write_json(
                a.common.json.as_deref(),
                &json!({
                    "model": a.common.model.model,
                    "kv": settings.label(),
                    "format": format.label(),
                    "n": cmp.n,
                    "max_tokens": a.max_tokens,
                    "timeout_s": a.timeout,
                    "isolation": sandbox.isolation().label(),
                    "pass_at_1_full": cmp.pass_a(),
                    "pass_at_1_kv": cmp.pass_b(),
                    "solved_full": cmp.solved_a,
                    "solved_kv": cmp.solved_b,
                    "full_only": cmp.only_a,
                    "kv_only": cmp.only_b,
                    "pruned_ratio_mean": pruned,
                    "wall_s": wall,
                    "problems": per_problem,
                }),
            )
        },
    )
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    sum / n.max(1) as f64
}

/// The one-screen report.
#[allow(clippy::too_many_arguments)]
fn report(
    a: &HumanevalArgs,
    format: Format,
    settings: &KvSettings,
    sandbox: &Sandbox,
    cmp: &Comparison,
    f: &Arm,
    k: Option<&Arm>,
    wall: f64,
) -> String {
    let label = settings.label();
    let width = label.len().max(4);
    let line = |name: &str, solved: usize, pass: f64, arm: &Arm| {
        let (_, failed, timed_out) = he::outcome_counts(&arm.attempts);
        format!(
            "  {name:<width$}  {solved:>3}/{} = {:5.1} %   ({failed} failed, {timed_out} timed out; \
             {:.0} tokens per answer)\n",
            cmp.n,
            100.0 * pass,
            mean(arm.answers.iter().map(|x| x.tokens as f64)),
        )
    };
    let ids = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let mut s = format!(
        "HumanEval pass@1, greedy, {} problems, {} format, up to {} tokens, model {}\n",
        cmp.n,
        format.label(),
        a.max_tokens,
        a.common.model.model
    );
    s += &line("full", cmp.solved_a, cmp.pass_a(), f);
    match k {
        None => s += "  (the cache under test is the full cache: one arm)\n",
        Some(k) => {
            s += &line(&label, cmp.solved_b, cmp.pass_b(), k);
            s += &format!(
                "  {label}: pruned {:.1} % of the cache at the end of an answer (mean)\n",
                100.0 * mean(k.answers.iter().map(|x| x.pruned_ratio))
            );
            s += &format!(
                "solved by full only ({}): {}\n",
                cmp.only_a.len(),
                ids(&cmp.only_a)
            );
            s += &format!(
                "solved by {label} only ({}): {}\n",
                cmp.only_b.len(),
                ids(&cmp.only_b)
            );
        }
    }
    s += &format!(
        "tests: {} s limit each, {}\nwall time {:.1} min\n",
        a.timeout,
        sandbox.isolation().label(),
        wall / 60.0
    );
    s
}
