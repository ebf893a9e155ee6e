//! Needle in a haystack, asked of a compressed context: the haystack (essay prose with the
//! needle and a second fact inserted) is prefilled, so a compressing cache profiles and
//! evicts before any question is seen; then each of two questions continues from its own
//! copy of that compressed cache. An answer counts when it contains the fact's key words.

use super::niah::{self, FACT, FACT_ANSWER, FACT_QUESTION, NEEDLE, NEEDLE_ANSWER, NEEDLE_QUESTION};
use super::tasks::continue_greedy;
use super::Engine;
use crate::compress::KvSettings;
use crate::error::{Error, Result};
use indicatif::ProgressBar;

const INTRO: &str = "Read the document below, then answer the question after it.\n\n";
/// Where the question starts; the context is everything before it.
const ASK: &str = "\n\nQuestion: ";
const SUFFIX: &str = " Answer in one short sentence.";

/// The questions of one grid cell, with what a correct answer contains.
pub const QUESTIONS: [(&str, &str); 2] = [
    (NEEDLE_QUESTION, NEEDLE_ANSWER),
    (FACT_QUESTION, FACT_ANSWER),
];

/// One grid cell's token ids: the context and, per question, what follows it.
#[derive(Debug, Clone)]
pub struct NeedlePrompt {
    pub length: usize,
    pub depth: f64,
    /// Where the needle landed (share of the prose before it).
    pub needle_depth: f64,
    /// Haystack tokens (by the tokenizer).
    pub haystack_tokens: usize,
    pub context: Vec<u32>,
    pub questions: [Vec<u32>; 2],
}

/// Depth of the second fact: half the context away from the needle, so the two questions
/// probe different regions.
fn fact_depth(depth: f64) -> f64 {
    if depth < 50.0 {
        depth + 50.0
    } else {
        depth - 50.0
    }
}

/// The prompt of one cell: a haystack of `length` tokens with the needle at `depth`
/// percent, in the model's chat template, cut where the question begins.
pub fn prompt(engine: &Engine, prose: &str, length: usize, depth: f64) -> Result<NeedlePrompt> {
    if !(0.0..=100.0).contains(&depth) {
        return Err(Error::InvalidSetting(format!(
            "--depths: {depth} is not a percentage in [0, 100]"
        )));
    }
    if length == 0 {
        return Err(Error::InvalidSetting("--lengths must be at least 1".into()));
    }
    if length >= engine.model.cfg.n_ctx {
        return Err(Error::ContextOverflow {
            tokens: length,
            ctx: engine.model.cfg.n_ctx,
        });
    }
    let count = |s: &str| engine.tokenizer.encode(s).map_or(0, |v| v.len());
    let hay = niah::build(
        prose,
        length,
        &[(NEEDLE, depth), (FACT, fact_depth(depth))],
        &count,
    );
    if hay.tokens.abs_diff(length) * 100 > length {
        return Err(Error::InvalidSetting(format!(
            "a haystack of {length} tokens cannot be cut from this prose (got {})",
            hay.tokens
        )));
    }
    let mut cut = None;
    let texts: Vec<String> = QUESTIONS
        .iter()
        .map(|(q, _)| {
            let rendered = engine.chat_text(&format!("{INTRO}{}{ASK}{q}{SUFFIX}", hay.text))?;
            let end = rendered
                .find(&format!("{}{ASK}", hay.text))
                .map(|i| i + hay.text.len())
                .ok_or_else(|| {
                    Error::Template("the chat template changed the haystack text".into())
                })?;
            cut = Some(rendered[..end].to_string());
            Ok(rendered[end..].to_string())
        })
        .collect::<Result<_>>()?;
    let context = engine
        .tokenizer
        .encode(cut.as_deref().unwrap_or_default())?;
    let questions = [
        engine.tokenizer.encode(&texts[0])?,
        engine.tokenizer.encode(&texts[1])?,
    ];
    let need = context.len() + questions.iter().map(Vec::len).max().unwrap_or(0);
    if need > engine.model.cfg.n_ctx {
        return Err(Error::ContextOverflow {
            tokens: need,
            ctx: engine.model.cfg.n_ctx,
        });
    }
    Ok(NeedlePrompt {
        length,
        depth,
        needle_depth: hay.depths[0],
        haystack_tokens: hay.tokens,
        context,
        questions,
    })
}

/// Answers to one cell's two questions and whether each is right.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CellResult {
    pub length: usize,
    pub depth: f64,
    pub answers: [String; 2],
    pub hits: [bool; 2],
}

impl CellResult {
    pub fn hit_count(&self) -> usize {
        self.hits.iter().filter(|&&h| h).count()
    }
}

/// Runs every cell under `settings`; `pb` advances once per cell.
pub fn run(
    engine: &Engine,
    settings: &KvSettings,
    prompts: &[NeedlePrompt],
    max_answer: usize,
    pb: &ProgressBar,
) -> Result<Vec<CellResult>> {
    let mut ws = engine.workspace();
    let model = engine.model;
    prompts
        .iter()
        .map(|p| {
            let mut cache = engine.cache(settings)?;
            let ctx_logits = cache.prefill(model, &mut ws, &p.context)?;
            let mut answers = [String::new(), String::new()];
            let mut hits = [false; 2];
            for (i, q) in p.questions.iter().enumerate() {
                // Each question continues from its own copy of the compressed context.
                let mut c = cache.clone();
                let mut logits = ctx_logits.clone();
                for &t in q {
                    logits.copy_from_slice(c.decode(model, &mut ws, t)?);
                }
                let ids = continue_greedy(engine, &mut ws, &mut c, &logits, max_answer)?;
                answers[i] = engine.tokenizer.decode(&ids);
                hits[i] = answers[i].to_lowercase().contains(QUESTIONS[i].1);
            }
            pb.inc(1);
            Ok(CellResult {
                length: p.length,
                depth: p.depth,
                answers,
                hits,
            })
        })
        .collect()
}

/// The grid as text: one row per depth, one column per length, each cell `full/kv` hits
/// out of 2.
pub fn render_grid(full: &[CellResult], kv: &[CellResult]) -> String {
    let mut lengths: Vec<usize> = full.iter().map(|c| c.length).collect();
    lengths.sort_unstable();
    lengths.dedup();
    let mut depths: Vec<f64> = full.iter().map(|c| c.depth).collect();
    depths.sort_by(f64::total_cmp);
    depths.dedup();
    let mut s = String::from("depth \\ length (hits of 2, full/kv)");
    for l in &lengths {
        s += &format!(" | {l:>9}");
    }
    s.push('\n');
    for d in &depths {
        s += &format!("{:>34}%", d);
        for l in &lengths {
            let find = |cells: &[CellResult]| {
                cells
                    .iter()
                    .find(|c| c.length == *l && c.depth == *d)
                    .map_or("-".to_string(), |c| c.hit_count().to_string())
            };
            s += &format!(" | {:>9}", format!("{}/{}", find(full), find(kv)));
        }
        s.push('\n');
    }
    s
}

/// Total hits and questions asked.
pub fn hits(cells: &[CellResult]) -> (usize, usize) {
    (
        cells.iter().map(CellResult::hit_count).sum(),
        2 * cells.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fact_sits_half_a_context_from_the_needle() {
        assert_eq!(fact_depth(0.0), 50.0);
        assert_eq!(fact_depth(25.0), 75.0);
        assert_eq!(fact_depth(50.0), 0.0);
        assert_eq!(fact_depth(100.0), 50.0);
    }

    #[test]
    fn grid_counts_hits_per_cell() {
        let cell = |length, depth, hits| CellResult {
            length,
            depth,
            answers: [String::new(), String::new()],
            hits,
        };
        let full = [
            cell(1024, 0.0, [true, true]),
            cell(2048, 0.0, [true, false]),
        ];
        let kv = [
            cell(1024, 0.0, [false, true]),
            cell(2048, 0.0, [false, false]),
        ];
        let g = render_grid(&full, &kv);
        assert!(g.contains("2/1") && g.contains("1/0"), "{g}");
        assert_eq!(hits(&full), (3, 4));
        assert_eq!(hits(&kv), (1, 4));
    }
}
