//! Policies as data (FASTGEN.md 2 and 4): what one KV head keeps.
//!
//! A [`Policy`] is a set of [`Part`]s; a token stays if any part keeps it. [`keep_set`] is a
//! pure function from a head's slots (their positions, classes and scores) to keep flags: it
//! decides, and the cache applies ([`crate::kv_cache::HeadCache::retain`]).
//!
//! The `frequent` part keeps the `budget` highest-scoring tokens *among those no cheaper part
//! of the same policy keeps* (FASTGEN.md 3 and 4); cheaper means earlier in [`Part`]'s order
//! (`sink`, `special`, `punct`). So its set depends on the policy it sits in, and a policy's
//! keep set is the union of each part's set *in that policy* ([`part_keep`]). Adding parts
//! never drops a token: `keep_set(A + B) ⊇ keep_set(A) ∪ keep_set(B)` (a token in the top k
//! of a set is in the top k of any subset holding it), which makes the candidate list nested.

use super::classes::{CONTROL, PUNCT, SINK};
use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// The building blocks of a policy, in order of cost (cheapest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// The first `sink_tokens` positions only. Not one of the paper's parts: it makes the
    /// StreamingLLM baseline (`sink+local`).
    Sink,
    /// Control tokens and the sink positions.
    Special,
    /// Punctuation tokens.
    Punct,
    /// The tokens with the highest cumulative attention.
    Frequent,
    /// The most recent tokens.
    Local,
    /// Everything.
    Full,
}

impl Part {
    pub const ALL: [Part; 6] = [
        Part::Sink,
        Part::Special,
        Part::Punct,
        Part::Frequent,
        Part::Local,
        Part::Full,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Part::Sink => "sink",
            Part::Special => "special",
            Part::Punct => "punct",
            Part::Frequent => "frequent",
            Part::Local => "local",
            Part::Full => "full",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// For class-based parts: whether a token of class `class` is kept.
    fn keeps_class(self, class: u8) -> bool {
        match self {
            Part::Sink => class & SINK != 0,
            Part::Special => class & (CONTROL | SINK) != 0,
            Part::Punct => class & PUNCT != 0,
            _ => false,
        }
    }
}

/// A union of parts. `Policy::FULL` keeps everything whatever else it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Policy {
    bits: u8,
}

impl Policy {
    pub const FULL: Policy = Policy { bits: 1 << 5 };

    pub fn of(parts: &[Part]) -> Policy {
        Policy {
            bits: parts.iter().fold(0, |b, p| b | p.bit()),
        }
    }
    pub fn contains(self, part: Part) -> bool {
        self.bits & part.bit() != 0
    }
    pub fn union(self, other: Policy) -> Policy {
        Policy {
            bits: self.bits | other.bits,
        }
    }
    pub fn without(self, part: Part) -> Policy {
        Policy {
            bits: self.bits & !part.bit(),
        }
    }
    pub fn is_full(self) -> bool {
        self.contains(Part::Full)
    }
    pub fn is_empty(self) -> bool {
        self.bits == 0
    }
    /// The parts, cheapest first.
    pub fn parts(self) -> impl Iterator<Item = Part> {
        Part::ALL.into_iter().filter(move |&p| self.contains(p))
    }
    /// Whether this policy needs cumulative attention scores (it has a `frequent` part and
    /// can evict).
    pub fn needs_scores(self) -> bool {
        self.contains(Part::Frequent) && !self.is_full()
    }
    /// Whether a token of class `class` is kept by a class-based part of this policy (the
    /// parts cheaper than `frequent`).
    pub fn keeps_class(self, class: u8) -> bool {
        self.parts().any(|p| p.keeps_class(class))
    }
}

impl fmt::Display for Policy {
    /// Canonical name: parts cheapest first joined by `+`; `full` alone when it is full.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_full() {
            return f.write_str("full");
        }
        let names: Vec<&str> = self.parts().map(Part::name).collect();
        f.write_str(&names.join("+"))
    }
}

impl FromStr for Policy {
    type Err = Error;
    /// `special+punct+frequent`, parts in any order.
    fn from_str(s: &str) -> Result<Policy> {
        let mut p = Policy::default();
        for name in s.split('+').map(str::trim) {
            let part = Part::ALL
                .into_iter()
                .find(|q| q.name() == name)
                .ok_or_else(|| {
                    Error::InvalidSetting(format!(
                        "unknown policy part '{name}' in '{s}' (parts: sink, special, punct, frequent, local, full)"
                    ))
                })?;
            p = p.union(Policy::of(&[part]));
        }
        Ok(p)
    }
}

/// The paper's candidate list (Eq. 2), each a superset of the one before.
pub fn default_candidates() -> Vec<Policy> {
    use Part::*;
    vec![
        Policy::of(&[Special]),
        Policy::of(&[Special, Punct]),
        Policy::of(&[Special, Punct, Frequent]),
        Policy::of(&[Special, Punct, Frequent, Local]),
        Policy::FULL,
    ]
}

/// The candidates of `--kv fastgen`: the paper's without `special+punct+frequent`, whose
/// heads lose all recent context while decoding and caused most of the paper-faithful
/// loss in our measurements (`docs/fastgen/BEYOND.md`).
pub fn local_candidates() -> Vec<Policy> {
    use Part::*;
    vec![
        Policy::of(&[Special]),
        Policy::of(&[Special, Punct]),
        Policy::of(&[Special, Punct, Frequent, Local]),
        Policy::FULL,
    ]
}

/// Parses a comma-separated candidate list; it must end with `full`, so that every head
/// has a choice.
pub fn parse_candidates(s: &str) -> Result<Vec<Policy>> {
    let list: Vec<Policy> = s
        .split(',')
        .map(|p| p.trim().parse())
        .collect::<Result<_>>()?;
    match list.last() {
        Some(p) if p.is_full() => Ok(list),
        _ => Err(Error::InvalidSetting(format!(
            "--candidates '{s}' must end with full"
        ))),
    }
}

/// A `--candidates` value, or the paper's list when absent.
pub fn parse_candidates_or_default(s: Option<&str>) -> Result<Vec<Policy>> {
    s.map_or_else(|| Ok(default_candidates()), parse_candidates)
}

/// How many tokens a part keeps out of `n`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// `ceil(r * n)`.
    Ratio(f64),
    /// A fixed count (at most `n`).
    Tokens(usize),
}

impl Budget {
    pub fn of(self, n: usize) -> usize {
        match self {
            // The epsilon keeps 0.3 * 10 at 3 despite binary rounding.
            Budget::Ratio(r) => ((r * n as f64 - 1e-9).ceil().max(0.0) as usize).min(n),
            Budget::Tokens(k) => k.min(n),
        }
    }
}

/// Parameters of the parts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Window of `local`: the last `local.of(n)` positions.
    pub local: Budget,
    /// Budget of `frequent`: `frequent.of(n)` tokens.
    pub frequent: Budget,
    /// A policy with `frequent` also keeps the last `grace` positions, so a new token is not
    /// evicted before it can gather attention (FASTGEN.md 9). 0, the paper's rule, by default.
    pub grace: usize,
    /// Every compressed policy keeps the last `grace_all` positions: a head without `local`
    /// still sees the few tokens just before the one it decodes. 0: the paper's rule.
    pub grace_all: usize,
    /// `frequent` ranks a token by its mean attention received, `score / (n - pos)` (the
    /// rows that could attend to it), instead of the sum, which favours early tokens.
    pub causal: bool,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            local: Budget::Ratio(0.3),
            frequent: Budget::Ratio(0.3),
            grace: 0,
            grace_all: 0,
            causal: false,
        }
    }
}

impl Params {
    /// The recent window a policy keeps: `local`'s, widened to `grace` for `frequent` and to
    /// `grace_all` for any policy that evicts.
    pub fn window(&self, policy: Policy, n: usize) -> usize {
        if policy.is_full() {
            return n;
        }
        let local = if policy.contains(Part::Local) {
            self.local.of(n)
        } else {
            0
        };
        let grace = if policy.contains(Part::Frequent) {
            self.grace.min(n)
        } else {
            0
        };
        local.max(grace).max(self.grace_all.min(n))
    }

    /// Every window width a compressed policy can have at length `n`, ascending, without 0.
    pub fn windows(&self, n: usize) -> Vec<usize> {
        let mut w: Vec<usize> = [
            Policy::of(&[Part::Special]),
            Policy::of(&[Part::Frequent]),
            Policy::of(&[Part::Local]),
            Policy::of(&[Part::Frequent, Part::Local]),
        ]
        .into_iter()
        .map(|p| self.window(p, n))
        .filter(|&w| w > 0)
        .collect();
        w.sort_unstable();
        w.dedup();
        w
    }
}

/// The slots `part` keeps inside `policy` (see the module comment for `frequent`).
///
/// `positions[slot]` are increasing; `pos_classes[pos]` is the class of position `pos`;
/// `scores[slot]` is read only for `frequent`; `n` is the sequence length.
pub fn part_keep(
    part: Part,
    policy: Policy,
    positions: &[u32],
    pos_classes: &[u8],
    scores: &[f32],
    n: usize,
    params: &Params,
) -> Vec<bool> {
    let class = |slot: usize| pos_classes[positions[slot] as usize];
    let len = positions.len();
    match part {
        Part::Full => vec![true; len],
        Part::Sink | Part::Special | Part::Punct => {
            (0..len).map(|s| part.keeps_class(class(s))).collect()
        }
        Part::Local => {
            let from = n - params.local.of(n);
            positions.iter().map(|&p| p as usize >= from).collect()
        }
        Part::Frequent => {
            let cheaper = Policy {
                bits: policy.bits & (Part::Frequent.bit() - 1),
            };
            let candidates = (0..len).filter(|&s| !cheaper.keeps_class(class(s)));
            let mut keep = vec![false; len];
            let k = params.frequent.of(n);
            let picked = if params.causal {
                // Rows n - pos have seen position pos (its own row included).
                let mean = |s: usize| scores[s] / (n - positions[s] as usize).max(1) as f32;
                top_k_by(candidates, mean, k)
            } else {
                top_k_by(candidates, |s| scores[s], k)
            };
            for s in picked {
                keep[s] = true;
            }
            keep
        }
    }
}

/// The slots `policy` keeps: the union of its parts' sets in it, plus the `grace` window
/// for policies with `frequent`. Pure: the caller applies it.
pub fn keep_set(
    policy: Policy,
    positions: &[u32],
    pos_classes: &[u8],
    scores: &[f32],
    n: usize,
    params: &Params,
) -> Vec<bool> {
    let mut keep = vec![false; positions.len()];
    if policy.is_full() {
        keep.fill(true);
        return keep;
    }
    for part in policy.parts() {
        let k = part_keep(part, policy, positions, pos_classes, scores, n, params);
        keep.iter_mut().zip(k).for_each(|(a, b)| *a |= b);
    }
    let from = n - params.window(policy, n);
    for (k, &p) in keep.iter_mut().zip(positions) {
        *k |= p as usize >= from;
    }
    keep
}

/// The `k` slots among `candidates` with the highest scores; ties go to the earlier slot.
pub fn top_k(candidates: impl Iterator<Item = usize>, scores: &[f32], k: usize) -> Vec<usize> {
    top_k_by(candidates, |s| scores[s], k)
}

/// The `k` slots among `candidates` with the highest `key`; ties go to the earlier slot.
pub fn top_k_by(
    candidates: impl Iterator<Item = usize>,
    key: impl Fn(usize) -> f32,
    k: usize,
) -> Vec<usize> {
    let mut c: Vec<usize> = candidates.collect();
    if c.len() > k {
        let by = |a: &usize, b: &usize| key(*b).total_cmp(&key(*a)).then(a.cmp(b));
        if k > 0 {
            c.select_nth_unstable_by(k - 1, by);
        }
        c.truncate(k);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_fail_loudly() {
        for p in default_candidates() {
            assert_eq!(p.to_string().parse::<Policy>().unwrap(), p);
        }
        let p: Policy = "local+special".parse().unwrap();
        assert_eq!(p.to_string(), "special+local");
        assert_eq!(
            "special+full".parse::<Policy>().unwrap().to_string(),
            "full"
        );
        let e = "special+punctuation".parse::<Policy>().unwrap_err();
        assert!(e.to_string().contains("'punctuation'"), "{e}");
        assert!(parse_candidates("special,special+punct").is_err());
        assert_eq!(parse_candidates("local, full").unwrap().len(), 2);
    }

    #[test]
    fn budgets_are_ceilings_of_the_current_length() {
        assert_eq!(Budget::Ratio(0.3).of(10), 3);
        assert_eq!(Budget::Ratio(0.3).of(11), 4);
        assert_eq!(Budget::Ratio(0.3).of(1000), 300);
        assert_eq!(Budget::Ratio(0.3).of(1), 1);
        assert_eq!(Budget::Ratio(0.0).of(50), 0);
        assert_eq!(Budget::Ratio(1.0).of(7), 7);
        assert_eq!(Budget::Tokens(5).of(3), 3);
    }
}
