//! `fastgen eval sweep`: the full cache, FastGen at several T, and the window, H2O, SnapKV
//! and Ada-KV baselines each set to the kept budget FastGen measured at each T (matched
//! budgets), on the chosen yardsticks ([`Task`]): teacher-forced ppl/KLD, needles, AlpacaEval
//! agreement, GSM8K, HumanEval pass@1 and long generation; writes `results.json`,
//! `report.md` (shaped like the paper's Table 1) and the plots.
//!
//! Budgets are measured on the teacher-forced prose (FastGen's kept share averaged over the
//! decode steps) and passed to the baselines as ratios of the sequence, so they scale with
//! every other task's length. The window keeps the sink and a recent window of that share;
//! H2O's two parts overlap, so their share is calibrated on the first window's prompt.
//! SnapKV and Ada-KV keep that share of the prompt; they evict nothing while decoding, so
//! the kept share they report (measured, like every arm's) is larger than FastGen's.
//!
//! The teacher-forced stage always runs, since it fixes those budgets; any other yardstick
//! may be left out, and one left out is `None` (null in `results.json`, "-" in the report),
//! never a zero. Every prompt is built and checked before the first arm runs, and HumanEval's
//! sandbox before any model work ([`sandbox`]), so a missing data set or Python fails in
//! seconds, not hours in. The generation yardsticks compare each arm with the full arm's
//! answers. HumanEval asks in the chat format and stops an answer once its code is complete;
//! long generation forces `longgen_tokens` tokens per LongBench-Write prompt. Both measure
//! each arm's kept fraction on their own answers (at the end of each), which is the x of
//! their plots: an answer's length, not the teacher-forced window's, sets what a budget
//! keeps.

use super::data::{GsmCase, WritePrompt};
use super::fidelity::{compare_arms, ArmFidelity, Windows};
use super::humaneval::sandbox::{Limits, Sandbox};
use super::humaneval::{self as he, Answer, Comparison, Format, Problem};
use super::metrics::KldSummary;
use super::needle::{self, CellResult, NeedlePrompt};
use super::plot::{draw_panels, draw_quality, Panel, Point};
use super::tasks::{self, Agreement};
use super::{data, longgen, Engine};
use crate::compress::plot::{draw_policy_map, MapSpec};
use crate::compress::{Budget, KvKind, KvSettings};
use crate::error::{Error, Result};
use indicatif::ProgressBar;
use serde::Serialize;
use serde_json::{json, Value};
use std::path::Path;

/// A yardstick of the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Teacher-forced ppl and KLD on prose: always run (it fixes the baselines' budgets).
    Ppl,
    /// Needles asked of a compressed haystack.
    Niah,
    /// AlpacaEval answers against the full arm's.
    Agree,
    /// GSM8K accuracy.
    Gsm8k,
    /// HumanEval pass@1 of chat answers run against the problems' tests in a sandbox.
    Humaneval,
    /// Forced-length answers to LongBench-Write prompts against the full arm's.
    Longgen,
}

impl Task {
    pub const ALL: [Task; 6] = [
        Task::Ppl,
        Task::Niah,
        Task::Agree,
        Task::Gsm8k,
        Task::Humaneval,
        Task::Longgen,
    ];

    /// The name `--tasks` takes.
    pub fn name(self) -> &'static str {
        match self {
            Task::Ppl => "ppl",
            Task::Niah => "niah",
            Task::Agree => "agree",
            Task::Gsm8k => "gsm8k",
            Task::Humaneval => "humaneval",
            Task::Longgen => "longgen",
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Task {
    type Err = Error;

    fn from_str(s: &str) -> Result<Task> {
        let s = s.trim();
        Task::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = Task::ALL.iter().map(|t| t.name()).collect();
                Error::InvalidSetting(format!(
                    "unknown yardstick '{s}': the yardsticks are {}",
                    names.join(", ")
                ))
            })
    }
}

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
    /// Yardsticks to run (`Task::Ppl` runs whether listed or not).
    pub tasks: Vec<Task>,
    pub humaneval_n: usize,
    pub humaneval_max_tokens: usize,
    pub longgen_n: usize,
    /// Tokens each long answer is forced to.
    pub longgen_tokens: usize,
}

impl SweepConfig {
    /// The full sweep: days on two cores with every yardstick (each generation yardstick is
    /// hours: HumanEval generates up to 164 x 512 tokens per arm, long generation
    /// 10 x 1,024).
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
            tasks: Task::ALL.to_vec(),
            humaneval_n: 164,
            humaneval_max_tokens: 512,
            longgen_n: 10,
            longgen_tokens: 1024,
        }
    }

    /// Tens of minutes on two cores: one window, a small needle grid, a few generations.
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
            humaneval_n: 4,
            humaneval_max_tokens: 256,
            longgen_n: 2,
            longgen_tokens: 256,
            ..SweepConfig::full(base)
        }
    }

    /// Whether `task` runs.
    pub fn runs(&self, task: Task) -> bool {
        task == Task::Ppl || self.tasks.contains(&task)
    }

    /// Checks everything that can be checked before a model loads.
    pub fn validate(&self) -> Result<()> {
        if self.recoveries.is_empty() {
            return Err(Error::InvalidSetting("a sweep needs at least one T".into()));
        }
        for a in fastgen_arms(self) {
            a.settings.validate()?;
        }
        self.windows.starts(usize::MAX / 2, usize::MAX / 2)?;
        let least = |v: &[usize]| v.iter().copied().min().unwrap_or(0);
        // (yardstick, what, value, least allowed) for each size a yardstick needs.
        let sizes = [
            (Task::Niah, "--niah-lengths", least(&self.niah_lengths), 1),
            (
                Task::Niah,
                "the number of niah_depths",
                self.niah_depths.len(),
                1,
            ),
            (Task::Niah, "niah_max_answer", self.niah_max_answer, 1),
            (Task::Agree, "--agree-n", self.agree_n, 1),
            (Task::Agree, "agree_max_tokens", self.agree_max_tokens, 1),
            (Task::Gsm8k, "--gsm8k-n", self.gsm8k_n, 1),
            (Task::Gsm8k, "gsm8k_max_tokens", self.gsm8k_max_tokens, 1),
            (Task::Humaneval, "--humaneval-n", self.humaneval_n, 1),
            (
                Task::Humaneval,
                "--humaneval-max-tokens",
                self.humaneval_max_tokens,
                1,
            ),
            (Task::Longgen, "--longgen-n", self.longgen_n, 1),
            // distinct-4 needs four tokens.
            (Task::Longgen, "--longgen-tokens", self.longgen_tokens, 4),
        ];
        match sizes.iter().find(|s| self.runs(s.0) && s.2 < s.3) {
            Some((task, what, _, min)) => Err(Error::InvalidSetting(format!(
                "{what} must be at least {min} when {task} runs (leave {task} out of --tasks \
                 to skip it)"
            ))),
            None => Ok(()),
        }
    }
}

/// The sandbox HumanEval's answers run in, when HumanEval runs. Built before any model work:
/// without Python 3 the sweep stops at once with the sandbox's error.
pub fn sandbox(cfg: &SweepConfig) -> Result<Option<Sandbox>> {
    when(
        cfg.runs(Task::Humaneval),
        || Sandbox::new(Limits::default()),
    )
}

/// `f`'s result if `on`, else `None`.
fn when<T>(on: bool, f: impl FnOnce() -> Result<T>) -> Result<Option<T>> {
    if on {
        f().map(Some)
    } else {
        Ok(None)
    }
}

/// Runs `f` under a progress bar named `name` of `len` steps.
fn stage<T>(
    progress: Progress,
    name: &str,
    len: u64,
    f: impl FnOnce(&ProgressBar) -> Result<T>,
) -> Result<T> {
    let pb = progress(name, len);
    let out = f(&pb)?;
    pb.finish();
    Ok(out)
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

/// FastGen at each T, compressed from the prompt on, then the paper's FastGen at each T
/// when `with_paper`.
fn fastgen_arms(cfg: &SweepConfig) -> Vec<Arm> {
    let ours = cfg.recoveries.iter().map(|&t| Arm {
        method: "fastgen".into(),
        recovery: Some(t),
        // The sweep measures the method per byte: compressed from the prompt on, never
        // deferred (`eval agree` and `eval longgen` with the defaults measure the default).
        settings: cfg.base.clone().with(|s| {
            s.kind = KvKind::FastGen;
            s.fastgen.recovery = t;
            s.fastgen.compress_from = 0;
        }),
    });
    // The paper's FastGen at the same T, for comparison with ours: drawn at its own kept
    // share, with no baselines of its own (the curves show where it lies against theirs).
    let paper = cfg
        .recoveries
        .iter()
        .filter(|_| cfg.with_paper)
        .map(|&t| Arm {
            method: "fastgen-paper".into(),
            recovery: Some(t),
            settings: KvSettings::paper().with(|s| s.fastgen.recovery = t),
        });
    ours.chain(paper).collect()
}

/// The window baseline keeping about `kept` of the sequence: the sink plus a recent window.
fn window_arm(base: &KvSettings, kept: f64, t: f64) -> Arm {
    Arm {
        method: "window".into(),
        recovery: Some(t),
        settings: base.clone().with(|s| {
            s.kind = KvKind::Window;
            s.window = Budget::Ratio(kept.clamp(1e-3, 1.0));
        }),
    }
}

/// SnapKV or Ada-KV keeping `kept` of the prompt per head (their window included).
fn snap_arm(base: &KvSettings, kind: KvKind, kept: f64, t: f64) -> Arm {
    let mut settings = base.clone().with(|s| s.kind = kind);
    settings.snap.budget = kept.clamp(1e-3, 1.0);
    Arm {
        method: kind.to_string(),
        recovery: Some(t),
        settings,
    }
}

/// H2O with local and frequent parts of `x` of the sequence each.
fn h2o_settings(base: &KvSettings, x: f64) -> KvSettings {
    base.clone().with(|s| {
        s.kind = KvKind::H2o;
        s.parts.r_local = x.clamp(0.0, 1.0);
        s.parts.r_frequent = x.clamp(0.0, 1.0);
    })
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

/// One arm's HumanEval results, against the full arm's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HumanevalScore {
    pub solved: usize,
    pub n: usize,
    pub pass_at_1: f64,
    /// Share of the full cache kept when an answer ended (1 - its pruned ratio), averaged.
    pub kept_mean: f64,
    /// Answers identical to the full arm's, character for character.
    pub identical: usize,
    /// Task ids solved by the full arm only, and by this arm only.
    pub full_only: Vec<String>,
    pub arm_only: Vec<String>,
}

/// One arm's results; `None` for a yardstick not run.
#[derive(Debug, Clone)]
pub struct ArmResult {
    pub arm: Arm,
    pub fidelity: ArmFidelity,
    pub kld: KldSummary,
    pub niah: Option<Vec<CellResult>>,
    pub agree: Option<Agreement>,
    pub gsm8k: Option<Vec<bool>>,
    pub humaneval: Option<HumanevalScore>,
    /// Means over the prompts, against the full arm's answers.
    pub longgen: Option<longgen::Summary>,
}

/// Progress bars by stage name and length (hidden ones in tests).
pub type Progress<'a> = &'a dyn Fn(&str, u64) -> ProgressBar;

/// Runs the sweep on `tokens` (the teacher-forced text) and `prose` (the haystack);
/// `sandbox` (from [`sandbox`]) is needed when HumanEval runs.
pub fn run(
    engine: &Engine,
    cfg: &SweepConfig,
    sandbox: Option<&Sandbox>,
    tokens: &[u32],
    prose: &str,
    progress: Progress,
) -> Result<Vec<ArmResult>> {
    cfg.validate()?;
    let inputs = Inputs::load(engine, cfg, sandbox, prose, progress)?;
    let (arms, fid) = ppl_stage(engine, cfg, tokens, progress)?;
    let kld = (fid.iter())
        .map(|f| {
            f.summary().ok_or_else(|| {
                Error::InvalidSetting("no positions were compared (empty text?)".into())
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Progress steps: `per` for each of `items` in every arm.
    let len = |items: usize, per: usize| (items * per * arms.len()) as u64;
    let niah = (inputs.needles.as_ref())
        .map(|p| {
            stage(progress, "niah", len(p.len(), 1), |pb| {
                (arms.iter())
                    .map(|a| needle::run(engine, &a.settings, p, cfg.niah_max_answer, pb))
                    .collect::<Result<Vec<_>>>()
            })
        })
        .transpose()?;
    let agree = (inputs.alpaca.as_ref())
        .map(|p| {
            stage(progress, "agree", len(p.len(), 1), |pb| {
                agree_stage(engine, &arms, p, cfg.agree_max_tokens, pb)
            })
        })
        .transpose()?;
    let gsm8k = (inputs.gsm8k.as_ref())
        .map(|(cases, p)| {
            stage(progress, "gsm8k", len(p.len(), 1), |pb| {
                let answers = all_answers(engine, &arms, p, cfg.gsm8k_max_tokens, pb)?;
                Ok((answers.iter())
                    .map(|g| tasks::gsm8k_correct(engine, cases, g))
                    .collect::<Vec<_>>())
            })
        })
        .transpose()?;
    let humaneval = (inputs.humaneval.as_ref())
        .map(|(sb, problems)| {
            // Each problem's answer, then its test run.
            stage(progress, "humaneval", len(problems.len(), 2), |pb| {
                humaneval_stage(engine, &arms, sb, problems, cfg.humaneval_max_tokens, pb)
            })
        })
        .transpose()?;
    let long = (inputs.longgen.as_ref())
        .map(|(items, p)| {
            stage(
                progress,
                "longgen",
                len(p.len(), cfg.longgen_tokens),
                |pb| longgen_stage(engine, &arms, items, p, cfg.longgen_tokens, pb),
            )
        })
        .transpose()?;
    let mut niah = niah.map(Vec::into_iter);
    let mut agree = agree.map(Vec::into_iter);
    let mut gsm8k = gsm8k.map(Vec::into_iter);
    let mut humaneval = humaneval.map(Vec::into_iter);
    let mut long = long.map(Vec::into_iter);
    Ok((arms.into_iter().zip(fid).zip(kld))
        .map(|((arm, fidelity), kld)| ArmResult {
            arm,
            fidelity,
            kld,
            niah: niah.as_mut().and_then(Iterator::next),
            agree: agree.as_mut().and_then(Iterator::next),
            gsm8k: gsm8k.as_mut().and_then(Iterator::next),
            humaneval: humaneval.as_mut().and_then(Iterator::next),
            longgen: long.as_mut().and_then(Iterator::next),
        })
        .collect())
}

/// Every chosen yardstick's prompts, built and checked before any arm runs.
struct Inputs<'a> {
    needles: Option<Vec<NeedlePrompt>>,
    alpaca: Option<Vec<Vec<u32>>>,
    gsm8k: Option<(Vec<GsmCase>, Vec<Vec<u32>>)>,
    humaneval: Option<(&'a Sandbox, Vec<Problem>)>,
    longgen: Option<(Vec<WritePrompt>, Vec<Vec<u32>>)>,
}

impl<'a> Inputs<'a> {
    fn load(
        engine: &Engine,
        cfg: &SweepConfig,
        sandbox: Option<&'a Sandbox>,
        prose: &str,
        progress: Progress,
    ) -> Result<Inputs<'a>> {
        Ok(Inputs {
            needles: when(cfg.runs(Task::Niah), || {
                needle_prompts(engine, cfg, prose, progress)
            })?,
            alpaca: when(cfg.runs(Task::Agree), || {
                tasks::alpaca_prompts(engine, &data::alpaca(cfg.agree_n)?)
            })?,
            gsm8k: when(cfg.runs(Task::Gsm8k), || {
                let cases = data::gsm8k(cfg.gsm8k_n)?;
                let prompts = tasks::gsm8k_prompts(engine, &cases)?;
                Ok((cases, prompts))
            })?,
            humaneval: when(cfg.runs(Task::Humaneval), || {
                let sb = sandbox.ok_or_else(|| {
                    Error::InvalidSetting("HumanEval needs a sandbox (sweep::sandbox)".into())
                })?;
                Ok((sb, he::problems(cfg.humaneval_n)?))
            })?,
            longgen: when(cfg.runs(Task::Longgen), || {
                let items = data::longbench_write(cfg.longgen_n)?;
                let prompts = longgen::prompts(engine, &items)?;
                longgen::check_context(engine, &prompts, cfg.longgen_tokens)?;
                Ok((items, prompts))
            })?,
        })
    }
}

/// The needle grid's prompts, lengths by depths.
fn needle_prompts(
    engine: &Engine,
    cfg: &SweepConfig,
    prose: &str,
    progress: Progress,
) -> Result<Vec<NeedlePrompt>> {
    let cells = (cfg.niah_lengths.len() * cfg.niah_depths.len()) as u64;
    stage(progress, "niah: building haystacks", cells, |pb| {
        (cfg.niah_lengths.iter())
            .flat_map(|&l| cfg.niah_depths.iter().map(move |&d| (l, d)))
            .map(|(l, d)| {
                let p = needle::prompt(engine, prose, l, d);
                pb.inc(1);
                p
            })
            .collect()
    })
}

/// Stage 1: every arm's teacher-forced fidelity. FastGen's runs first, since its kept share
/// at each T sets the baselines' budgets; the full arm comes first in the result.
fn ppl_stage(
    engine: &Engine,
    cfg: &SweepConfig,
    tokens: &[u32],
    progress: Progress,
) -> Result<(Vec<Arm>, Vec<ArmFidelity>)> {
    let settings = |arms: &[Arm]| arms.iter().map(|a| a.settings.clone()).collect::<Vec<_>>();
    let mut arms = fastgen_arms(cfg);
    let mut fid = stage(progress, "ppl: full + fastgen", 0, |pb| {
        compare_arms(engine, tokens, cfg.windows, &settings(&arms), pb)
    })?;
    let first_ctx = &tokens[..cfg.windows.ctx.min(tokens.len())];
    let ts = cfg.recoveries.len();
    let baselines = stage(progress, "matching budgets", ts as u64, |pb| {
        let mut out = Vec::new();
        // Our FastGen's arms come first, one per T.
        for (a, f) in arms.iter().zip(&fid).take(ts) {
            let (t, kept) = (a.recovery.unwrap_or(1.0), f.kept_ratio());
            out.push(window_arm(&cfg.base, kept, t));
            out.push(h2o_arm(engine, &cfg.base, first_ctx, kept, t)?);
            for kind in [KvKind::SnapKv, KvKind::AdaKv] {
                out.push(snap_arm(&cfg.base, kind, kept, t));
            }
            pb.inc(1);
        }
        Ok(out)
    })?;
    fid.extend(stage(progress, "ppl: full + baselines", 0, |pb| {
        compare_arms(engine, tokens, cfg.windows, &settings(&baselines), pb)
    })?);
    arms.extend(baselines);
    let full = Arm {
        method: "full".into(),
        recovery: None,
        settings: KvSettings::with_kind(KvKind::Full),
    };
    arms.insert(0, full);
    fid.insert(0, against_itself(&fid[0]));
    Ok((arms, fid))
}

/// The full cache against itself on `other`'s positions, by definition: KLD 0, same top
/// everywhere.
fn against_itself(other: &ArmFidelity) -> ArmFidelity {
    ArmFidelity {
        rows: (other.rows.iter())
            .map(|r| super::metrics::TokenCompare {
                kld: 0.0,
                same_top: true,
                p_kv: r.p_full,
                nll_kv: r.nll_full,
                ..*r
            })
            .collect(),
        pruned_ratio: 0.0,
        kv_bytes_allocated: other.kv_bytes_full,
        kv_bytes_full: other.kv_bytes_full,
        profile_ms: 0.0,
    }
}

/// Every arm's greedy answers to `prompts`, the full arm's first.
fn all_answers(
    engine: &Engine,
    arms: &[Arm],
    prompts: &[Vec<u32>],
    max_tokens: usize,
    pb: &ProgressBar,
) -> Result<Vec<Vec<Vec<u32>>>> {
    (arms.iter())
        .map(|a| tasks::answers(engine, &a.settings, prompts, max_tokens, pb))
        .collect()
}

/// Each arm's AlpacaEval answers against the full arm's.
fn agree_stage(
    engine: &Engine,
    arms: &[Arm],
    prompts: &[Vec<u32>],
    max_tokens: usize,
    pb: &ProgressBar,
) -> Result<Vec<Agreement>> {
    let answers = all_answers(engine, arms, prompts, max_tokens, pb)?;
    (answers.iter())
        .map(|a| {
            tasks::agreement(engine, &answers[0], a)
                .ok_or_else(|| Error::InvalidSetting("no AlpacaEval answers".into()))
        })
        .collect()
}

/// Each arm's HumanEval chat answers, run against the tests, scored against the full arm's.
fn humaneval_stage(
    engine: &Engine,
    arms: &[Arm],
    sandbox: &Sandbox,
    problems: &[Problem],
    max_tokens: usize,
    pb: &ProgressBar,
) -> Result<Vec<HumanevalScore>> {
    let runs = (arms.iter())
        .map(|a| {
            let answers = he::answers(engine, &a.settings, problems, Format::Chat, max_tokens, pb)?;
            let attempts = he::check(sandbox, problems, Format::Chat, &answers, pb)?;
            Ok((answers, attempts.iter().map(|t| t.passed).collect()))
        })
        .collect::<Result<Vec<(Vec<Answer>, Vec<bool>)>>>()?;
    let (full_answers, full_passed) = &runs[0];
    Ok((runs.iter())
        .map(|(answers, passed)| {
            let cmp = Comparison::new(problems, full_passed, passed);
            HumanevalScore {
                solved: cmp.solved_b,
                n: cmp.n,
                pass_at_1: cmp.pass_b(),
                kept_mean: answers.iter().map(|a| 1.0 - a.pruned_ratio).sum::<f64>()
                    / answers.len().max(1) as f64,
                identical: (answers.iter().zip(full_answers))
                    .filter(|(a, f)| a.text == f.text)
                    .count(),
                full_only: cmp.only_a,
                arm_only: cmp.only_b,
            }
        })
        .collect())
}

/// Each arm's forced-length answers, summarised against the full arm's.
fn longgen_stage(
    engine: &Engine,
    arms: &[Arm],
    items: &[WritePrompt],
    prompts: &[Vec<u32>],
    tokens: usize,
    pb: &ProgressBar,
) -> Result<Vec<longgen::Summary>> {
    let runs = (arms.iter())
        .map(|a| longgen::run_arm(engine, &a.settings, prompts, tokens, pb))
        .collect::<Result<Vec<_>>>()?;
    (runs.iter())
        .map(|r| {
            let per_prompt = longgen::compare(engine, items, prompts, &runs[0], r)?;
            longgen::summarise(&per_prompt)
                .ok_or_else(|| Error::InvalidSetting("no long-generation prompts".into()))
        })
        .collect()
}

fn label(a: &Arm) -> String {
    match (a.method.as_str(), a.recovery) {
        ("fastgen" | "fastgen-paper", Some(t)) => format!("{} T={t:.2}", a.method),
        (m, Some(t)) => format!("{m} @ fastgen T={t:.2} budget"),
        (m, None) => m.to_string(),
    }
}

/// `results.json`: the configuration and every arm's numbers (null for a yardstick not run).
pub fn results_json(model: &str, cfg: &SweepConfig, results: &[ArmResult]) -> Value {
    let ran: Vec<&str> = (Task::ALL.iter())
        .filter(|&&t| cfg.runs(t))
        .map(|t| t.name())
        .collect();
    json!({
        "model": model,
        "config": {
            "tasks": ran,
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
            "humaneval_n": cfg.humaneval_n,
            "humaneval_max_tokens": cfg.humaneval_max_tokens,
            "longgen_n": cfg.longgen_n,
            "longgen_tokens": cfg.longgen_tokens,
        },
        "arms": results.iter().map(|r| json!({
            "arm": label(&r.arm),
            "method": r.arm.method,
            "recovery": r.arm.recovery,
            "settings": r.arm.settings.label(),
            "pruned_ratio": r.fidelity.pruned_ratio,
            "kv_bytes_allocated": r.fidelity.kv_bytes_allocated,
            "kv_bytes_full": r.fidelity.kv_bytes_full,
            "profile_ms": r.fidelity.profile_ms,
            "ppl": r.kld,
            "niah": r.niah.as_ref().map(|cells| {
                let (hits, asked) = needle::hits(cells);
                json!({"hits": hits, "questions": asked, "cells": cells})
            }),
            "agree": r.agree,
            "gsm8k": r.gsm8k.as_ref().map(|g| json!({
                "correct": g.iter().filter(|&&c| c).count(), "n": g.len(),
                "accuracy": tasks::share(g),
            })),
            "humaneval": r.humaneval,
            "longgen": r.longgen.as_ref().map(|s| json!({
                "pruned_end": s.pruned_end(), "distinct4_ratio": s.distinct4_ratio,
                "rouge_l": s.rouge_l, "identical": s.identical, "n": s.n,
            })),
        })).collect::<Vec<_>>(),
    })
}

/// The report's columns, one cell each per arm (`row`).
const COLUMNS: [&str; 17] = [
    "arm",
    "T",
    "KV MiB",
    "pruned %",
    "mean KLD",
    "same top %",
    "NIAH hits",
    "exact match %",
    "ROUGE-L",
    "first div.",
    "GSM8K",
    "HumanEval",
    "HumanEval kept %",
    "longgen pruned %",
    "longgen distinct-4 ratio",
    "longgen ROUGE-L",
    "longgen identical",
];

/// One arm's cells; "-" for a yardstick not run.
fn row(r: &ArmResult) -> [String; 17] {
    let dash = || "-".to_string();
    let niah = r.niah.as_ref().map_or_else(dash, |c| {
        let (hits, asked) = needle::hits(c);
        format!("{hits}/{asked}")
    });
    let agree = r.agree.map_or_else(
        || [dash(), dash(), dash()],
        |a| {
            [
                format!("{:.0}", 100.0 * a.exact_match),
                format!("{:.3}", a.rouge_l),
                format!("{:.1}", a.first_divergence),
            ]
        },
    );
    let gsm8k = r.gsm8k.as_ref().map_or_else(dash, |g| {
        format!("{}/{}", g.iter().filter(|&&c| c).count(), g.len())
    });
    let he = r.humaneval.as_ref().map_or_else(
        || [dash(), dash()],
        |h| {
            [
                format!("{}/{}", h.solved, h.n),
                format!("{:.1}", 100.0 * h.kept_mean),
            ]
        },
    );
    let long = r.longgen.as_ref().map_or_else(
        || [dash(), dash(), dash(), dash()],
        |s| {
            [
                format!("{:.1}", 100.0 * s.pruned_end()),
                format!("{:.3}", s.distinct4_ratio),
                format!("{:.3}", s.rouge_l),
                format!("{}/{}", s.identical, s.n),
            ]
        },
    );
    let [exact, rouge, div] = agree;
    let [solved, he_kept] = he;
    let [pruned_end, d4, long_rouge, identical] = long;
    [
        r.arm.method.clone(),
        r.arm.recovery.map_or_else(dash, |t| format!("{t:.2}")),
        format!("{:.1}", r.fidelity.kv_bytes_allocated / (1 << 20) as f64),
        format!("{:.1}", 100.0 * r.fidelity.pruned_ratio),
        format!("{:.4}", r.kld.mean_kld),
        format!("{:.1}", 100.0 * r.kld.same_top),
        niah,
        exact,
        rouge,
        div,
        gsm8k,
        solved,
        he_kept,
        pruned_end,
        d4,
        long_rouge,
        identical,
    ]
}

/// What a yardstick other than the teacher-forced one asked, for the report's preamble.
fn describe(cfg: &SweepConfig, task: Task) -> String {
    match task {
        Task::Ppl => String::new(),
        Task::Niah => format!(
            "Needles: lengths {:?}, depths {:?} (2 questions each).",
            cfg.niah_lengths, cfg.niah_depths
        ),
        Task::Agree => format!(
            "Agreement: {} AlpacaEval instructions, up to {} tokens.",
            cfg.agree_n, cfg.agree_max_tokens
        ),
        Task::Gsm8k => format!(
            "GSM8K: {} problems, up to {} tokens.",
            cfg.gsm8k_n, cfg.gsm8k_max_tokens
        ),
        Task::Humaneval => format!(
            "HumanEval: {} problems asked in a chat turn, up to {} tokens, each answer's code \
             run against the problem's tests (pass@1, greedy).",
            cfg.humaneval_n, cfg.humaneval_max_tokens
        ),
        Task::Longgen => format!(
            "Long generation: {} LongBench-Write prompts, {} tokens each (end-of-generation \
             masked until then).",
            cfg.longgen_n, cfg.longgen_tokens
        ),
    }
}

/// `report.md`: one row per arm, shaped like the paper's Table 1.
pub fn report_md(model: &str, cfg: &SweepConfig, results: &[ArmResult]) -> String {
    let w = cfg.windows;
    let mut s = format!(
        "# FastGen sweep: {model}\n\nTeacher-forced: {} window(s) of {} prefilled + {} fed \
         tokens of the essays.",
        w.max_windows, w.ctx, w.eval,
    );
    let (ran, skipped): (Vec<Task>, Vec<Task>) = Task::ALL[1..].iter().partition(|&&t| cfg.runs(t));
    for t in ran {
        s += " ";
        s += &describe(cfg, t);
    }
    if !skipped.is_empty() {
        let names: Vec<&str> = skipped.iter().map(|t| t.name()).collect();
        s += &format!(" Not run: {} (\"-\" in their columns).", names.join(", "));
    }
    s += " Baselines are set to the kept share FastGen measured at the T in their row (snapkv \
          and adakv: of the prompt; they keep every decoded token, so their pruned share is \
          smaller).\n\n";
    s += &format!("| {} |\n", COLUMNS.join(" | "));
    s += &format!("|{}\n", "---|".repeat(COLUMNS.len()));
    for r in results {
        s += &format!("| {} |\n", row(r).join(" | "));
    }
    s += "\nKV MiB: allocated at the end of a teacher-forced window (full cache: all of it). \
          Agreement columns compare each arm's greedy answers with the full cache's. \
          HumanEval: problems solved; its kept % is the share of the cache kept at the end of \
          each answer, averaged. longgen: pruned % with the whole answer in the cache, mean \
          distinct-4 over the full arm's, ROUGE-L of token ids against the full arm's answers, \
          answers identical to them.\n";
    if let Some(full) = results.first().and_then(|r| r.niah.as_ref()) {
        s += "\n## Needle grid (hits of 2, full/arm)\n\n";
        for r in &results[1..] {
            if let Some(cells) = &r.niah {
                s += &format!(
                    "{}\n```\n{}```\n",
                    label(&r.arm),
                    needle::render_grid(full, cells)
                );
            }
        }
    }
    s
}

/// A panel of each arm's (kept fraction, value) on a yardstick, for the arms that ran it.
fn own_kept_panel(
    results: &[ArmResult],
    title: &str,
    xy: impl Fn(&ArmResult) -> Option<(f64, f64)>,
) -> Panel {
    Panel {
        title: title.into(),
        log: false,
        points: (results.iter())
            .filter_map(|r| xy(r).map(|(x, y)| (r.arm.method.clone(), x, y)))
            .collect(),
    }
}

/// Draws `stem.svg` and `stem.png` into `dir` with `draw`, listing them in `files` when drawn.
fn figure(
    dir: &Path,
    stem: &str,
    files: &mut Vec<String>,
    draw: impl FnOnce(&Path, &Path) -> Result<bool>,
) -> Result<()> {
    let (svg, png) = (format!("{stem}.svg"), format!("{stem}.png"));
    if draw(&dir.join(&svg), &dir.join(&png))? {
        files.push(svg);
        files.push(png);
    }
    Ok(())
}

/// Writes `results.json`, `report.md`, `quality.svg/png`, `humaneval.svg/png` and
/// `longgen.svg/png` (when they ran) and `policy-map.svg/png` into `dir`. The policy map is
/// FastGen's at the T nearest 0.95, on the first window's context.
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
        .map(|r| Point {
            method: r.arm.method.clone(),
            kept: 1.0 - r.fidelity.pruned_ratio,
            mean_kld: r.kld.mean_kld,
            same_top: r.kld.same_top,
            niah: r.niah.as_ref().and_then(|cells| {
                let (h, q) = needle::hits(cells);
                (q > 0).then(|| h as f64 / q as f64)
            }),
        })
        .collect();
    figure(dir, "quality", &mut files, |svg, png| {
        let title = format!("{model}: quality against kept KV fraction");
        draw_quality(&points, &title, svg, png)
    })?;
    // HumanEval and long generation against the kept fraction measured on their own answers.
    if results.iter().any(|r| r.humaneval.is_some()) {
        let pass = own_kept_panel(results, "pass@1", |r| {
            (r.humaneval.as_ref()).map(|h| (h.kept_mean, h.pass_at_1))
        });
        figure(dir, "humaneval", &mut files, |svg, png| {
            let title = format!("{model}: HumanEval pass@1 against kept fraction");
            draw_panels(&[pass], &title, svg, png)
        })?;
    }
    if results.iter().any(|r| r.longgen.is_some()) {
        let at_end = |r: &ArmResult, y: fn(&longgen::Summary) -> f64| {
            (r.longgen.as_ref()).map(|s| (1.0 - s.pruned_end(), y(s)))
        };
        let panels = [
            own_kept_panel(results, "distinct-4, arm over full", |r| {
                at_end(r, |s| s.distinct4_ratio)
            }),
            own_kept_panel(results, "ROUGE-L against full", |r| {
                at_end(r, |s| s.rouge_l)
            }),
        ];
        figure(dir, "longgen", &mut files, |svg, png| {
            let title = format!(
                "{model}: long generation ({} tokens) against kept fraction at the end",
                cfg.longgen_tokens
            );
            draw_panels(&panels, &title, svg, png)
        })?;
    }
    let t = cfg
        .recoveries
        .iter()
        .copied()
        .min_by(|a, b| (a - 0.95).abs().total_cmp(&(b - 0.95).abs()))
        .unwrap_or(0.95);
    let settings = cfg.base.clone().with(|s| {
        s.kind = KvKind::FastGen;
        s.fastgen.recovery = t;
    });
    let ctx = &tokens[..cfg.windows.ctx.min(tokens.len())];
    let mut cache = engine.cache(&settings)?;
    cache.prefill(engine.model, &mut engine.workspace(), ctx)?;
    let report = cache.report();
    let shortfall = cache.head_shortfalls();
    let spec = MapSpec {
        report: &report,
        title: format!("{model}: fastgen T={t}, {} prompt tokens", ctx.len()),
        order: settings.policy_order(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> SweepConfig {
        SweepConfig::quick(KvSettings::default())
    }

    fn invalid(cfg: SweepConfig) -> String {
        cfg.validate().unwrap_err().to_string()
    }

    #[test]
    fn task_names_parse_and_an_unknown_one_names_the_valid_ones() {
        for t in Task::ALL {
            assert_eq!(t.name().parse::<Task>().unwrap(), t);
        }
        assert_eq!(" HumanEval".parse::<Task>().unwrap(), Task::Humaneval);
        let e = "humaneva".parse::<Task>().unwrap_err().to_string();
        assert!(e.contains("'humaneva'"), "{e}");
        assert!(
            e.contains("ppl, niah, agree, gsm8k, humaneval, longgen"),
            "{e}"
        );
    }

    #[test]
    fn ppl_always_runs_and_the_rest_only_when_chosen() {
        let cfg = SweepConfig {
            tasks: vec![Task::Humaneval],
            ..quick()
        };
        assert!(cfg.runs(Task::Ppl) && cfg.runs(Task::Humaneval));
        assert!(!cfg.runs(Task::Longgen) && !cfg.runs(Task::Niah));
        assert!(Task::ALL.iter().all(|&t| quick().runs(t)));
    }

    #[test]
    fn sizes_are_checked_only_for_the_yardsticks_that_run() {
        assert!(quick().validate().is_ok());
        let e = invalid(SweepConfig {
            humaneval_n: 0,
            ..quick()
        });
        assert!(
            e.contains("--humaneval-n must be at least 1 when humaneval runs"),
            "{e}"
        );
        let e = invalid(SweepConfig {
            longgen_tokens: 3,
            ..quick()
        });
        assert!(e.contains("--longgen-tokens must be at least 4"), "{e}");
        // Left out, a yardstick's sizes do not matter.
        let cfg = SweepConfig {
            tasks: vec![Task::Longgen],
            humaneval_n: 0,
            gsm8k_n: 0,
            agree_n: 0,
            niah_lengths: vec![],
            ..quick()
        };
        assert!(cfg.validate().is_ok());
        assert!(invalid(SweepConfig {
            recoveries: vec![],
            ..quick()
        })
        .contains("at least one T"));
        assert!(invalid(SweepConfig {
            recoveries: vec![0.9, 1.5],
            ..quick()
        })
        .contains("--recovery"));
    }

    #[test]
    fn no_sandbox_is_built_when_humaneval_does_not_run() {
        let cfg = SweepConfig {
            tasks: vec![Task::Niah],
            ..quick()
        };
        assert!(sandbox(&cfg).unwrap().is_none());
    }
}
