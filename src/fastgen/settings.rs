//! KV-cache settings: which method, its parameters, and their validation. Every setting
//! read from a command line or a request goes through [`KvSettings::validate`], so a bad
//! value is an [`Error::InvalidSetting`] naming it, never a panic.

use super::policy::{default_candidates, Budget, Params, Part, Policy};
use super::profile::{GqaAgg, ProfileRows};
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
}

impl FromStr for KvKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<KvKind> {
        match s {
            "full" => Ok(KvKind::Full),
            "fastgen" => Ok(KvKind::FastGen),
            "window" => Ok(KvKind::Window),
            "h2o" => Ok(KvKind::H2o),
            _ => match s.strip_prefix("fixed:") {
                Some(parts) => Ok(KvKind::Fixed(parts.parse()?)),
                None => Err(Error::InvalidSetting(format!(
                    "--kv '{s}': expected fastgen, full, window, h2o or fixed:PARTS (e.g. fixed:special+punct+frequent)"
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
        }
    }
}

/// Everything that decides what a sequence's cache keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct KvSettings {
    pub kind: KvKind,
    /// Recovery threshold T in [0, 1] (FastGen).
    pub recovery: f64,
    /// r_l: the local window is `ceil(r_l * n)` tokens.
    pub r_local: f64,
    /// r_f: the frequent part keeps `ceil(r_f * n)` tokens.
    pub r_frequent: f64,
    /// Leading positions counted as special (the attention sink).
    pub sink_tokens: usize,
    pub gqa_agg: GqaAgg,
    /// Whitespace-only tokens count as punctuation.
    pub punct_whitespace: bool,
    pub profile_rows: ProfileRows,
    /// FastGen's candidates, cheapest first, ending with `full`.
    pub candidates: Vec<Policy>,
    /// The `window` baseline's recent window (besides the sink tokens).
    pub window: Budget,
    /// Policies with `frequent` also keep the last `frequent_grace` positions (0: paper).
    pub frequent_grace: usize,
}

impl Default for KvSettings {
    fn default() -> KvSettings {
        KvSettings {
            kind: KvKind::FastGen,
            recovery: 0.95,
            r_local: 0.3,
            r_frequent: 0.3,
            sink_tokens: 1,
            gqa_agg: GqaAgg::Min,
            punct_whitespace: false,
            profile_rows: ProfileRows::All,
            candidates: default_candidates(),
            window: Budget::Ratio(0.3),
            frequent_grace: 0,
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
    /// The defaults with another method.
    pub fn with_kind(kind: KvKind) -> KvSettings {
        KvSettings {
            kind,
            ..KvSettings::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        unit_range("--recovery", self.recovery)?;
        unit_range("--r-local", self.r_local)?;
        unit_range("--r-frequent", self.r_frequent)?;
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
        if self.profile_rows == ProfileRows::Last(0) {
            return Err(Error::InvalidSetting(
                "--profile-rows last:W needs W >= 1".into(),
            ));
        }
        if !self.candidates.last().is_some_and(|p| p.is_full()) {
            return Err(Error::InvalidSetting(
                "--candidates must end with full".into(),
            ));
        }
        if let Some(p) = self.candidates.iter().find(|p| p.is_empty()) {
            return Err(Error::InvalidSetting(format!(
                "--candidates: empty policy '{p}'"
            )));
        }
        if let KvKind::Fixed(p) = self.kind {
            if p.is_empty() {
                return Err(Error::InvalidSetting("--kv fixed: needs parts".into()));
            }
        }
        Ok(())
    }

    /// The parts' parameters for this method (the window baseline's budget is its local
    /// window).
    pub fn params(&self) -> Params {
        let local = match self.kind {
            KvKind::Window => self.window,
            _ => Budget::Ratio(self.r_local),
        };
        Params {
            local,
            frequent: Budget::Ratio(self.r_frequent),
            grace: self.frequent_grace,
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
        }
    }

    /// Whether prefill must gather attention statistics: to choose (FastGen) or to seed the
    /// cumulative scores of a fixed policy with `frequent`.
    pub fn needs_profile(&self) -> bool {
        self.fixed_policy().is_none_or(|p| p.needs_scores())
    }

    /// A short description, e.g. `fastgen T=0.95` or `window 30%`.
    pub fn label(&self) -> String {
        match self.kind {
            KvKind::FastGen => format!("fastgen T={}", self.recovery),
            KvKind::Window => match self.window {
                Budget::Ratio(r) => format!("window {}%", r * 100.0),
                Budget::Tokens(k) => format!("window {k} tokens"),
            },
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
        let bad = [
            (
                KvSettings {
                    recovery: 1.5,
                    ..KvSettings::default()
                },
                "--recovery",
            ),
            (
                KvSettings {
                    recovery: f64::NAN,
                    ..KvSettings::default()
                },
                "--recovery",
            ),
            (
                KvSettings {
                    r_local: -0.1,
                    ..KvSettings::default()
                },
                "--r-local",
            ),
            (
                KvSettings {
                    r_frequent: 2.0,
                    ..KvSettings::default()
                },
                "--r-frequent",
            ),
            (
                KvSettings {
                    window: Budget::Ratio(0.0),
                    ..KvSettings::default()
                },
                "--window-ratio",
            ),
            (
                KvSettings {
                    window: Budget::Tokens(0),
                    ..KvSettings::default()
                },
                "--window-tokens",
            ),
            (
                KvSettings {
                    candidates: vec![Policy::of(&[Part::Special])],
                    ..KvSettings::default()
                },
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
