//! KV-cache settings: which method, its parameters, and their validation. Every setting
//! read from a command line or a request goes through [`KvSettings::validate`], so a bad
//! value is an [`Error::InvalidSetting`] naming it, never a panic.

use super::policy::{default_candidates, local_candidates, Budget, Params, Part, Policy};
use super::profile::{GqaAgg, ProfileRows};
use super::snapkv::SnapSettings;
use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// The cache method: FastGen or one of the paper's baselines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvKind {
    /// Every token in every head: the engine without compression.
    Full,
    /// Adaptive: each KV head gets the first candidate recovering `T` of its attention.
    #[default]
    FastGen,
    /// StreamingLLM: the sink tokens and a recent window, on every head.
    Window,
    /// H2O: `local + frequent` on every head.
    H2o,
    /// One hybrid on every head (the paper's non-adaptive baselines).
    Fixed(Policy),
    /// SnapKV: each head keeps its observation window and its top prompt tokens by the
    /// window's attention; nothing is evicted while decoding.
    SnapKv,
    /// Ada-KV on SnapKV: the same scores, one top-k per layer over all its heads.
    AdaKv,
}

impl FromStr for KvKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<KvKind> {
        match s {
            "full" => Ok(KvKind::Full),
            "fastgen" => Ok(KvKind::FastGen),
            "window" => Ok(KvKind::Window),
            "h2o" => Ok(KvKind::H2o),
            "snapkv" => Ok(KvKind::SnapKv),
            "adakv" => Ok(KvKind::AdaKv),
            _ => match s.strip_prefix("fixed:") {
                Some(parts) => Ok(KvKind::Fixed(parts.parse()?)),
                None => Err(Error::InvalidSetting(format!(
                    "--kv '{s}': expected fastgen, full, window, h2o, snapkv, adakv or fixed:PARTS (e.g. fixed:special+punct+frequent)"
                ))),
            },
        }
    }
}

impl fmt::Display for KvKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvKind::Full => f.write_str("full"),
            KvKind::FastGen => f.write_str("fastgen"),
            KvKind::Window => f.write_str("window"),
            KvKind::H2o => f.write_str("h2o"),
            KvKind::Fixed(p) => write!(f, "fixed:{p}"),
            KvKind::SnapKv => f.write_str("snapkv"),
            KvKind::AdaKv => f.write_str("adakv"),
        }
    }
}

/// How `frequent` ranks tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HhScores {
    /// Cumulative attention received (the paper, H2O).
    #[default]
    Sum,
    /// Mean attention received over the rows after the token (its own included).
    Causal,
}

impl FromStr for HhScores {
    type Err = Error;
    fn from_str(s: &str) -> Result<HhScores> {
        match s {
            "sum" => Ok(HhScores::Sum),
            "causal" => Ok(HhScores::Causal),
            _ => Err(Error::InvalidSetting(format!(
                "--hh-scores '{s}': expected sum or causal"
            ))),
        }
    }
}

impl fmt::Display for HhScores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HhScores::Sum => "sum",
            HhScores::Causal => "causal",
        })
    }
}

/// A memory budget for the compressed prompt: FastGen picks the largest T that fits it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KvBudget {
    /// Bytes of kept keys and values over all layers and heads.
    Bytes(usize),
    /// Kept share of the full cache, in (0, 1].
    Ratio(f64),
}

impl FromStr for KvBudget {
    type Err = Error;
    /// `0.6` or `60%` (a ratio), `50000000`, `48MiB`, `512KiB`, `1GiB` (bytes).
    fn from_str(s: &str) -> Result<KvBudget> {
        let bad = || {
            Error::InvalidSetting(format!(
                "--kv-budget '{s}': expected a ratio in (0, 1] (0.6, 60%) or bytes (50000000, 48MiB)"
            ))
        };
        let t = s.trim();
        let ratio = |r: f64| {
            if r > 0.0 && r <= 1.0 {
                Ok(KvBudget::Ratio(r))
            } else {
                Err(bad())
            }
        };
        if let Some(p) = t.strip_suffix('%') {
            return ratio(p.trim().parse::<f64>().map_err(|_| bad())? / 100.0);
        }
        if t.contains('.') {
            return ratio(t.parse().map_err(|_| bad())?);
        }
        let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
            Some(i) => t.split_at(i),
            None => (t, ""),
        };
        let mult: usize = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" => 1 << 10,
            "MiB" | "M" => 1 << 20,
            "GiB" | "G" => 1 << 30,
            _ => return Err(bad()),
        };
        let n: usize = num.parse().map_err(|_| bad())?;
        match n.checked_mul(mult) {
            Some(b) if b > 0 => Ok(KvBudget::Bytes(b)),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for KvBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvBudget::Bytes(b) => write!(f, "{b} bytes"),
            KvBudget::Ratio(r) => write!(f, "{}% kept", r * 100.0),
        }
    }
}

/// Everything that decides what a sequence's cache keeps: the method, how the parts of a
/// policy are sized (every method), each baseline's own budget, and FastGen's own choices.
#[derive(Debug, Clone, PartialEq)]
pub struct KvSettings {
    pub kind: KvKind,
    pub parts: PartSettings,
    /// The `window` baseline's recent window (besides the sink tokens).
    pub window: Budget,
    /// `snapkv` and `adakv`: observation window, pooling and kept share of the prompt.
    pub snap: SnapSettings,
    pub fastgen: FastGenSettings,
}

/// How the parts of a policy (`special`, `punct`, `frequent`, `local`, `sink`) are sized and
/// which tokens they count, for every method that uses them.
#[derive(Debug, Clone, PartialEq)]
pub struct PartSettings {
    /// r_l: the local window is `ceil(r_l * n)` tokens.
    pub r_local: f64,
    /// r_f: the frequent part keeps `ceil(r_f * n)` tokens.
    pub r_frequent: f64,
    /// Leading positions counted as special (the attention sink).
    pub sink_tokens: usize,
    /// Whitespace-only tokens count as punctuation.
    pub punct_whitespace: bool,
    /// Policies with `frequent` also keep the last `frequent_grace` positions (0: paper).
    pub frequent_grace: usize,
}

/// FastGen's own settings: how each head's policy is chosen, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct FastGenSettings {
    /// Recovery threshold T in [0, 1].
    pub recovery: f64,
    /// How a KV head aggregates the recoveries of its query heads.
    pub gqa_agg: GqaAgg,
    pub profile_rows: ProfileRows,
    /// The candidates, cheapest first, ending with `full`.
    pub candidates: Vec<Policy>,
    /// Replay the last `replay` prompt rows as decode steps to measure recovery (0: the
    /// paper's static recovery).
    pub replay: usize,
    /// Every compressed policy also keeps the last `grace` positions (0: paper).
    pub grace: usize,
    /// How `frequent` ranks tokens.
    pub hh_scores: HhScores,
    /// Pick T to fit this budget instead of using `recovery`.
    pub budget: Option<KvBudget>,
    /// The cache stays full until the sequence holds this many tokens; then every head's
    /// policy is chosen from all the rows so far, prompt and answer, and applied (0: right
    /// after the prompt, as the paper does). A policy is thus never chosen on a sequence
    /// shorter than its windows, and short chats are never compressed.
    pub compress_from: usize,
}

/// `--kv fastgen`'s `compress_from`: below this length the cache is a few MiB on the models
/// fastgen targets (SmolLM2: 11.5 MiB at f16), and windows sized as ratios of the length are
/// long enough to hold a sentence (`docs/RESULTS.md`, "The default").
pub const DEFAULT_COMPRESS_FROM: usize = 512;

/// `--kv fastgen`'s T, with [`DEFAULT_GQA_AGG`]. With compression deferred to
/// `DEFAULT_COMPRESS_FROM` tokens, heads are chosen on at least 512 rows; at T = 0.92 with
/// `mean` the 1,024-token answers of `eval longgen` keep the full cache's distinct-4 and
/// ROUGE-L 0.998-1.000 while pruning 42% (SmolLM2) and 26% (Qwen2.5) at the end, against 33%
/// and 12% at 0.90 with `min` (`docs/RESULTS.md`, "The default").
pub const DEFAULT_RECOVERY: f64 = 0.92;

/// `--kv fastgen`'s grouped-query aggregation: a KV head takes a policy when its query heads
/// together keep T of their attention (`min`, the paper's, demands it of every query head
/// and sends most of Qwen2.5's 7-query-head groups to `full`).
pub const DEFAULT_GQA_AGG: GqaAgg = GqaAgg::Mean;

/// `--kv fastgen`: the mechanisms that won the measurements of `docs/fastgen/BEYOND.md`.
impl Default for KvSettings {
    fn default() -> KvSettings {
        let paper = KvSettings::paper();
        KvSettings {
            fastgen: FastGenSettings {
                recovery: DEFAULT_RECOVERY,
                gqa_agg: DEFAULT_GQA_AGG,
                replay: 128,
                grace: 32,
                hh_scores: HhScores::Causal,
                candidates: local_candidates(),
                compress_from: DEFAULT_COMPRESS_FROM,
                ..paper.fastgen
            },
            ..paper
        }
    }
}

fn unit_range(name: &str, v: f64) -> Result<()> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(Error::InvalidSetting(format!(
            "{name} must be between 0 and 1, got {v}"
        )))
    }
}

impl KvSettings {
    /// `--kv fastgen-paper`: FastGen as the paper and FASTGEN.md describe it.
    pub fn paper() -> KvSettings {
        KvSettings {
            kind: KvKind::FastGen,
            parts: PartSettings {
                r_local: 0.3,
                r_frequent: 0.3,
                sink_tokens: 1,
                punct_whitespace: false,
                frequent_grace: 0,
            },
            window: Budget::Ratio(0.3),
            snap: SnapSettings::default(),
            fastgen: FastGenSettings {
                recovery: 0.95,
                gqa_agg: GqaAgg::Min,
                profile_rows: ProfileRows::All,
                candidates: default_candidates(),
                replay: 0,
                grace: 0,
                hh_scores: HhScores::Sum,
                budget: None,
                compress_from: 0,
            },
        }
    }

    /// The settings a `--kv` name starts from: `fastgen-paper` is [`KvSettings::paper`],
    /// any other method the defaults with that method.
    pub fn preset(kv: &str) -> Result<KvSettings> {
        match kv {
            "fastgen-paper" => Ok(KvSettings::paper()),
            _ => Ok(KvSettings::with_kind(kv.parse()?)),
        }
    }

    /// Whether the FastGen-only extensions apply (the named baselines stay the literature's).
    fn is_fastgen(&self) -> bool {
        self.kind == KvKind::FastGen
    }

    /// These settings with the changes `change` makes (a preset with a few fields set:
    /// `KvSettings::default().with(|s| s.fastgen.recovery = 0.9)`).
    pub fn with(mut self, change: impl FnOnce(&mut KvSettings)) -> KvSettings {
        change(&mut self);
        self
    }

    /// The defaults with another method.
    pub fn with_kind(kind: KvKind) -> KvSettings {
        KvSettings::default().with(|s| s.kind = kind)
    }

    pub fn validate(&self) -> Result<()> {
        self.snap.validate()?;
        unit_range("--recovery", self.fastgen.recovery)?;
        unit_range("--r-local", self.parts.r_local)?;
        unit_range("--r-frequent", self.parts.r_frequent)?;
        match self.window {
            Budget::Ratio(r) if !(r > 0.0 && r <= 1.0) => {
                return Err(Error::InvalidSetting(format!(
                    "--window-ratio must be in (0, 1], got {r}"
                )))
            }
            Budget::Tokens(0) => {
                return Err(Error::InvalidSetting(
                    "--window-tokens must be at least 1".into(),
                ))
            }
            _ => {}
        }
        if self.fastgen.profile_rows == ProfileRows::Last(0) {
            return Err(Error::InvalidSetting(
                "--profile-rows last:W needs W >= 1".into(),
            ));
        }
        if !self.fastgen.candidates.last().is_some_and(|p| p.is_full()) {
            return Err(Error::InvalidSetting(
                "--candidates must end with full".into(),
            ));
        }
        if let Some(p) = self.fastgen.candidates.iter().find(|p| p.is_empty()) {
            return Err(Error::InvalidSetting(format!(
                "--candidates: empty policy '{p}'"
            )));
        }
        if let KvKind::Fixed(p) = self.kind {
            if p.is_empty() {
                return Err(Error::InvalidSetting("--kv fixed: needs parts".into()));
            }
        }
        match self.fastgen.budget {
            Some(_) if !self.is_fastgen() => {
                return Err(Error::InvalidSetting(format!(
                    "--kv-budget picks FastGen's T; it does not apply to --kv {}",
                    self.kind
                )))
            }
            Some(KvBudget::Ratio(r)) if !(r > 0.0 && r <= 1.0) => {
                return Err(Error::InvalidSetting(format!(
                    "--kv-budget ratio must be in (0, 1], got {r}"
                )))
            }
            Some(KvBudget::Bytes(0)) => {
                return Err(Error::InvalidSetting(
                    "--kv-budget must be at least 1 byte".into(),
                ))
            }
            _ => {}
        }
        Ok(())
    }

    /// The parts' parameters for this method (the window baseline's budget is its local
    /// window).
    pub fn params(&self) -> Params {
        let local = match self.kind {
            KvKind::Window => self.window,
            _ => Budget::Ratio(self.parts.r_local),
        };
        let fastgen = self.is_fastgen();
        Params {
            local,
            frequent: Budget::Ratio(self.parts.r_frequent),
            grace: self.parts.frequent_grace,
            grace_all: if fastgen { self.fastgen.grace } else { 0 },
            causal: fastgen && self.fastgen.hh_scores == HhScores::Causal,
        }
    }

    /// The order in which reports and policy maps list policies: FastGen's candidates,
    /// cheapest first (other methods: none; their policies are listed by name).
    pub fn policy_order(&self) -> Vec<String> {
        match self.kind {
            KvKind::FastGen => self
                .fastgen
                .candidates
                .iter()
                .map(|p| p.to_string())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The one policy of every head, for the non-adaptive methods.
    pub fn fixed_policy(&self) -> Option<Policy> {
        match self.kind {
            KvKind::Full => Some(Policy::FULL),
            KvKind::FastGen => None,
            KvKind::Window => Some(Policy::of(&[Part::Sink, Part::Local])),
            KvKind::H2o => Some(Policy::of(&[Part::Frequent, Part::Local])),
            KvKind::Fixed(p) => Some(p),
            // Chosen per head on the prompt, then never evicting.
            KvKind::SnapKv | KvKind::AdaKv => Some(Policy::FULL),
        }
    }

    /// The sequence length at which a cache of `prompt_len` prompt tokens is compressed: the
    /// prompt's own length unless FastGen defers compression to `compress_from`.
    pub fn compress_at(&self, prompt_len: usize) -> usize {
        if self.is_fastgen() {
            prompt_len.max(self.fastgen.compress_from)
        } else {
            prompt_len
        }
    }

    /// Whether prefill must gather attention statistics: to choose (FastGen) or to seed the
    /// cumulative scores of a fixed policy with `frequent`.
    pub fn needs_profile(&self) -> bool {
        self.is_snap() || self.fixed_policy().is_none_or(|p| p.needs_scores())
    }

    /// `snapkv` or `adakv`: one-shot eviction by the observation window's attention.
    pub fn is_snap(&self) -> bool {
        matches!(self.kind, KvKind::SnapKv | KvKind::AdaKv)
    }

    /// First profiled position of a prompt of `s` tokens: SnapKV and Ada-KV profile only
    /// their observation window, whose column sums are their scores.
    pub fn profile_start(&self, s: usize) -> usize {
        if self.is_snap() {
            s - self.snap.window_len(s)
        } else {
            self.fastgen.profile_rows.start(s)
        }
    }

    /// A short description, e.g. `fastgen T=0.95` or `window 30%`.
    pub fn label(&self) -> String {
        match self.kind {
            KvKind::FastGen => {
                let mut l = match self.fastgen.budget {
                    Some(b) => format!("fastgen budget {b}"),
                    None => format!("fastgen T={}", self.fastgen.recovery),
                };
                if self.fastgen.replay > 0 {
                    l += &format!(" replay:{}", self.fastgen.replay);
                }
                if self.fastgen.grace > 0 {
                    l += &format!(" grace:{}", self.fastgen.grace);
                }
                if self.fastgen.hh_scores != HhScores::Sum {
                    l += &format!(" hh:{}", self.fastgen.hh_scores);
                }
                if self.fastgen.gqa_agg != GqaAgg::Min {
                    l += &format!(" gqa:{}", self.fastgen.gqa_agg);
                }
                if self.fastgen.compress_from > 0 {
                    l += &format!(" from:{}", self.fastgen.compress_from);
                }
                l
            }
            KvKind::Window => match self.window {
                Budget::Ratio(r) => format!("window {}%", r * 100.0),
                Budget::Tokens(k) => format!("window {k} tokens"),
            },
            KvKind::SnapKv | KvKind::AdaKv => format!("{} {}", self.kind, self.snap.label()),
            k => k.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse() {
        for s in [
            "full",
            "fastgen",
            "window",
            "h2o",
            "snapkv",
            "adakv",
            "fixed:special+punct+frequent",
        ] {
            assert_eq!(s.parse::<KvKind>().unwrap().to_string(), s);
        }
        let e = "streaming".parse::<KvKind>().unwrap_err().to_string();
        assert!(e.contains("--kv 'streaming'"), "{e}");
        assert!("fixed:".parse::<KvKind>().is_err());
        assert!("fixed:special+heavy".parse::<KvKind>().is_err());
    }

    #[test]
    fn out_of_range_settings_name_themselves() {
        let with = |change: fn(&mut KvSettings)| {
            let mut s = KvSettings::default();
            change(&mut s);
            s
        };
        let bad = [
            (with(|s| s.fastgen.recovery = 1.5), "--recovery"),
            (with(|s| s.fastgen.recovery = f64::NAN), "--recovery"),
            (with(|s| s.parts.r_local = -0.1), "--r-local"),
            (with(|s| s.parts.r_frequent = 2.0), "--r-frequent"),
            (with(|s| s.window = Budget::Ratio(0.0)), "--window-ratio"),
            (with(|s| s.window = Budget::Tokens(0)), "--window-tokens"),
            (
                with(|s| s.fastgen.candidates = vec![Policy::of(&[Part::Special])]),
                "--candidates",
            ),
        ];
        for (s, name) in bad {
            let e = s.validate().unwrap_err();
            assert!(matches!(e, Error::InvalidSetting(_)));
            assert!(e.to_string().contains(name), "{e} should name {name}");
        }
        KvSettings::default().validate().unwrap();
    }

    #[test]
    fn presets_budgets_and_scores_parse() {
        let paper = KvSettings::preset("fastgen-paper").unwrap();
        assert_eq!(paper, KvSettings::paper());
        assert_eq!((paper.fastgen.replay, paper.fastgen.grace), (0, 0));
        assert_eq!(paper.fastgen.hh_scores, HhScores::Sum);
        assert_eq!(paper.params(), Params::default());
        let d = KvSettings::preset("fastgen").unwrap();
        assert_eq!(d, KvSettings::default());
        assert!(d.fastgen.replay > 0 && d.fastgen.grace > 0);
        let p = d.params();
        assert!(p.causal && p.grace_all == d.fastgen.grace);
        // The named baselines keep the literature's rules whatever the FastGen settings.
        let h = KvSettings::default().with(|s| s.kind = KvKind::H2o);
        assert_eq!(h.params(), Params::default());
        assert!(KvSettings::preset("streaming").is_err());
        assert_eq!("causal".parse::<HhScores>().unwrap(), HhScores::Causal);
        let e = "mean".parse::<HhScores>().unwrap_err().to_string();
        assert!(e.contains("--hh-scores"), "{e}");
        for (s, want) in [
            ("0.6", KvBudget::Ratio(0.6)),
            ("60%", KvBudget::Ratio(0.6)),
            ("1.0", KvBudget::Ratio(1.0)),
            ("50000000", KvBudget::Bytes(50_000_000)),
            ("48MiB", KvBudget::Bytes(48 << 20)),
            ("512K", KvBudget::Bytes(512 << 10)),
            ("1GiB", KvBudget::Bytes(1 << 30)),
        ] {
            assert_eq!(s.parse::<KvBudget>().unwrap(), want, "{s}");
        }
        for bad in [
            "0",
            "0.0",
            "1.5",
            "150%",
            "-3",
            "12XB",
            "MiB",
            "",
            "99999999999999999999",
        ] {
            let e = bad.parse::<KvBudget>().unwrap_err().to_string();
            assert!(e.contains("--kv-budget"), "{bad}: {e}");
        }
        let mut e = KvSettings::with_kind(KvKind::Window);
        e.fastgen.budget = Some(KvBudget::Ratio(0.5));
        assert!(e
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--kv-budget"));
    }

    #[test]
    fn baselines_are_fixed_policies() {
        let w = KvSettings::with_kind(KvKind::Window);
        assert_eq!(w.fixed_policy().unwrap().to_string(), "sink+local");
        assert!(!w.needs_profile());
        let h = KvSettings::with_kind(KvKind::H2o);
        assert_eq!(h.fixed_policy().unwrap().to_string(), "frequent+local");
        assert!(h.needs_profile());
        assert!(KvSettings::default().needs_profile());
        assert!(!KvSettings::with_kind(KvKind::Full).needs_profile());
    }
}
