//! HumanEval pass@1 with greedy answers: the 164 problems, prompts in the chat or the plain
//! completion format, answers generated under a cache setting and run against each
//! problem's tests in a sandboxed Python process (`sandbox`), code taken from the answers
//! by `code`.
//!
//! The default is the chat format. Qwen2.5-Coder-0.5B-Instruct (`--model qwen2.5-0.5b`),
//! full cache, up to 512 tokens, on the first 40 problems: chat 34/40 (85.0 %, 166 tokens
//! per answer), plain completion of the prompt 25/40 (62.5 %, 54 tokens). The completions
//! are extracted correctly but are worse code (an instruct model continuing bare text); the
//! first 40 problems are easier than the rest.

pub mod code;
pub mod sandbox;

use super::tasks::continue_greedy_until;
use super::Engine;
use crate::compress::KvSettings;
use crate::error::{Error, Result};
use crate::fetch;
use indicatif::ProgressBar;
use sandbox::{Outcome, RunResult, Sandbox};
use std::path::Path;

/// One HumanEval problem.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Problem {
    pub task_id: String,
    /// Imports, helpers, and the signature and docstring of the function to write.
    pub prompt: String,
    pub entry_point: String,
    /// Defines `check(candidate)`.
    pub test: String,
    pub canonical_solution: String,
}

/// The first `n` problems of the pinned HumanEval (all 164 if `n` is larger).
pub fn problems(n: usize) -> Result<Vec<Problem>> {
    problems_from(&fetch::data_file("humaneval")?, n)
}

/// The first `n` problems of a HumanEval JSONL file.
pub fn problems_from(path: &Path, n: usize) -> Result<Vec<Problem>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let problems: Vec<Problem> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .take(n)
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                Error::Fetch(format!(
                    "{} line {}: not a HumanEval problem: {e}",
                    path.display(),
                    i + 1
                ))
            })
        })
        .collect::<Result<_>>()?;
    if problems.is_empty() {
        return Err(Error::Fetch(format!(
            "{}: no HumanEval problems",
            path.display()
        )));
    }
    Ok(problems)
}

/// How a problem is put to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A chat turn asking for the function in a fenced block (the model's chat template).
    Chat,
    /// The prompt as plain text, to be continued with the function's body.
    Raw,
}

impl Format {
    pub fn label(self) -> &'static str {
        match self {
            Format::Chat => "chat",
            Format::Raw => "raw completion",
        }
    }
}

/// The prompt's token ids in `format`.
pub fn prompt_ids(engine: &Engine, p: &Problem, format: Format) -> Result<Vec<u32>> {
    match format {
        Format::Chat => {
            let user = format!(
                "Complete the following Python function. Reply with the complete function, \
                 with the imports it needs, in one ```python code block.\n\n```python\n{}```",
                p.prompt
            );
            engine.tokenizer.encode(&engine.chat_text(&user)?)
        }
        Format::Raw => engine.encode(&p.prompt),
    }
}

/// The code an answer gives for `p`.
pub fn answer_code(p: &Problem, format: Format, answer: &str) -> String {
    match format {
        Format::Chat => code::chat_code(answer, &p.entry_point),
        Format::Raw => code::completion_body(&p.prompt, answer).to_string(),
    }
}

/// One generated answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub text: String,
    pub tokens: usize,
    /// The cache's pruned ratio when the answer ended.
    pub pruned_ratio: f64,
}

/// Greedy answers to every problem under `settings`, each stopped once its code is complete
/// (the same rule for every cache); `pb` advances once per problem.
pub fn answers(
    engine: &Engine,
    settings: &KvSettings,
    problems: &[Problem],
    format: Format,
    max_tokens: usize,
    pb: &ProgressBar,
) -> Result<Vec<Answer>> {
    let mut ws = engine.workspace();
    let chat = format == Format::Chat;
    problems
        .iter()
        .map(|p| {
            let prompt = prompt_ids(engine, p, format)?;
            let mut cache = engine.cache(settings)?;
            let logits = cache.prefill(engine.model, &mut ws, &prompt)?;
            let done = |ids: &[u32]| {
                code::finished(
                    chat,
                    &p.prompt,
                    &p.entry_point,
                    &engine.tokenizer.decode(ids),
                )
            };
            let ids =
                continue_greedy_until(engine, &mut ws, &mut cache, &logits, max_tokens, done)?;
            pb.inc(1);
            Ok(Answer {
                text: engine.tokenizer.decode(&ids),
                tokens: ids.len(),
                pruned_ratio: cache.pruned_ratio(),
            })
        })
        .collect()
}

/// One answer's code and how its test run went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attempt {
    pub passed: bool,
    pub outcome: Outcome,
    /// Why it failed (the last line of stderr, or the timeout); empty when passed.
    pub reason: String,
    pub tokens: usize,
    pub seconds: f64,
    pub code: String,
}

/// Runs every answer's program; `pb` advances once per problem.
pub fn check(
    sandbox: &Sandbox,
    problems: &[Problem],
    format: Format,
    answers: &[Answer],
    pb: &ProgressBar,
) -> Result<Vec<Attempt>> {
    problems
        .iter()
        .zip(answers)
        .map(|(p, a)| {
            let code = answer_code(p, format, &a.text);
            let run: RunResult =
                sandbox.run(&code::program(&p.prompt, &code, &p.test, &p.entry_point))?;
            pb.inc(1);
            Ok(Attempt {
                passed: run.outcome == Outcome::Passed,
                outcome: run.outcome,
                reason: run.reason(),
                tokens: a.tokens,
                seconds: run.seconds,
                code,
            })
        })
        .collect()
}

/// Two arms' results on the same problems.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub n: usize,
    pub solved_a: usize,
    pub solved_b: usize,
    /// Task ids solved by one arm only.
    pub only_a: Vec<String>,
    pub only_b: Vec<String>,
}

impl Comparison {
    pub fn new(problems: &[Problem], a: &[bool], b: &[bool]) -> Comparison {
        let only = |x: &[bool], y: &[bool]| {
            problems
                .iter()
                .zip(x.iter().zip(y))
                .filter(|(_, (&x, &y))| x && !y)
                .map(|(p, _)| p.task_id.clone())
                .collect()
        };
        let count = |v: &[bool]| v.iter().filter(|&&s| s).count();
        Comparison {
            n: problems.len().min(a.len()).min(b.len()),
            solved_a: count(a),
            solved_b: count(b),
            only_a: only(a, b),
            only_b: only(b, a),
        }
    }

    pub fn pass_a(&self) -> f64 {
        self.solved_a as f64 / self.n.max(1) as f64
    }

    pub fn pass_b(&self) -> f64 {
        self.solved_b as f64 / self.n.max(1) as f64
    }
}

/// How many attempts ended each way: (passed, failed, timed out).
pub fn outcome_counts(attempts: &[Attempt]) -> (usize, usize, usize) {
    let count = |o: Outcome| attempts.iter().filter(|a| a.outcome == o).count();
    (
        count(Outcome::Passed),
        count(Outcome::Failed),
        count(Outcome::TimedOut),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pinned() -> Vec<Problem> {
        problems(usize::MAX).expect("the pinned HumanEval")
    }

    #[test]
    fn the_pinned_set_has_164_problems_and_every_canonical_solution_passes_its_tests() {
        let all = pinned();
        assert_eq!(all.len(), 164);
        assert_eq!(all[0].task_id, "HumanEval/0");
        let sb = Sandbox::new(sandbox::Limits::default()).unwrap();
        // A sample across the set (every run starts a Python process).
        for p in all.iter().step_by(10) {
            // The canonical solution is the body the prompt leaves open.
            let src = code::program(&p.prompt, &p.canonical_solution, &p.test, &p.entry_point);
            let r = sb.run(&src).unwrap();
            assert_eq!(r.outcome, Outcome::Passed, "{}: {}", p.task_id, r.stderr);
        }
    }

    #[test]
    fn wrong_and_looping_answers_fail_within_the_limit() {
        let p = &pinned()[0];
        let sb = Sandbox::new(sandbox::Limits {
            wall: Duration::from_secs(2),
            ..Default::default()
        })
        .unwrap();
        let run = |answer: &str, format: Format| {
            let code = answer_code(p, format, answer);
            sb.run(&code::program(&p.prompt, &code, &p.test, &p.entry_point))
                .unwrap()
        };
        let chat_ok = format!(
            "Sure:\n```python\nfrom typing import List\n\ndef {}(numbers: List[float], threshold: float) -> bool:\n{}```\n",
            p.entry_point, p.canonical_solution
        );
        assert_eq!(run(&chat_ok, Format::Chat).outcome, Outcome::Passed);
        let raw_ok = format!("{}\n\ndef unrelated():\n    pass\n", p.canonical_solution);
        assert_eq!(run(&raw_ok, Format::Raw).outcome, Outcome::Passed);
        let wrong = run("    return False\n", Format::Raw);
        assert_eq!(wrong.outcome, Outcome::Failed);
        assert!(wrong.reason().starts_with("AssertionError"), "{wrong:?}");
        let t0 = std::time::Instant::now();
        let looping = run("    while True:\n        pass\n", Format::Raw);
        assert_eq!(looping.outcome, Outcome::TimedOut);
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn comparison_counts_and_lists_the_differences() {
        let ps: Vec<Problem> = (0..4)
            .map(|i| Problem {
                task_id: format!("HumanEval/{i}"),
                prompt: String::new(),
                entry_point: "f".into(),
                test: String::new(),
                canonical_solution: String::new(),
            })
            .collect();
        let c = Comparison::new(&ps, &[true, true, false, false], &[true, false, true, true]);
        assert_eq!((c.n, c.solved_a, c.solved_b), (4, 2, 3));
        assert_eq!(c.only_a, ["HumanEval/1"]);
        assert_eq!(c.only_b, ["HumanEval/2", "HumanEval/3"]);
        assert_eq!((c.pass_a(), c.pass_b()), (0.5, 0.75));
    }

    #[test]
    fn a_malformed_file_is_an_error_naming_the_line() {
        let path = std::env::temp_dir().join(format!("he-bad-{}.jsonl", std::process::id()));
        std::fs::write(&path, "{\"task_id\": \"x\"}\n").unwrap();
        let e = problems_from(&path, 10).unwrap_err().to_string();
        assert!(
            e.contains("line 1") && e.contains("not a HumanEval problem"),
            "{e}"
        );
        std::fs::write(&path, "\n").unwrap();
        assert!(problems_from(&path, 10).is_err());
        std::fs::remove_file(&path).unwrap();
    }
}
