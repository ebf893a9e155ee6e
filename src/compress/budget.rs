//! Budget mode (issue 8): users think in bytes, FastGen in T. Every KV head's choice is
//! the first candidate whose recovery reaches T, so the kept size only grows with T; the
//! budget mode takes the largest T whose choices fit.

/// One KV head's options: each candidate's aggregated recovery and the entries it keeps
/// on the prompt, in candidate order (the last one is taken when none reaches T).
#[derive(Debug, Clone, PartialEq)]
pub struct HeadOptions {
    pub recovery: Vec<f64>,
    pub kept: Vec<usize>,
}

impl HeadOptions {
    /// The index FastGen chooses at threshold `t`.
    pub fn choice(&self, t: f64) -> usize {
        super::choice::choice(&self.recovery, t)
    }

    fn kept_at(&self, t: f64) -> usize {
        self.kept.get(self.choice(t)).copied().unwrap_or(0)
    }
}

/// The threshold chosen for a budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// The largest T (one of the heads' recoveries, or 1) whose choices fit.
    pub threshold: f64,
    /// Entries kept at that T.
    pub kept: usize,
    /// False when even the cheapest choices (T = 0) exceed the budget; T is then 0.
    pub met: bool,
}

/// The largest T whose choices keep at most `budget` entries over all heads.
pub fn fit_threshold(heads: &[HeadOptions], budget: usize) -> Fit {
    let total = |t: f64| heads.iter().map(|h| h.kept_at(t)).sum::<usize>();
    // The choices change only where T crosses a recovery, so those (and 1) are the only
    // thresholds worth trying; the largest T of each step is the recovery itself.
    let mut ts: Vec<f64> = heads
        .iter()
        .flat_map(|h| h.recovery.iter().copied())
        .filter(|r| r.is_finite())
        .map(|r| r.min(1.0))
        .chain([1.0])
        .collect();
    ts.sort_by(|a, b| b.total_cmp(a));
    ts.dedup();
    for t in ts {
        let kept = total(t);
        if kept <= budget {
            return Fit {
                threshold: t,
                kept,
                met: true,
            };
        }
    }
    Fit {
        threshold: 0.0,
        kept: total(0.0),
        met: total(0.0) <= budget,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_largest_threshold_that_fits() {
        // Head a: 0.5 / 0.9 / 1.0 keeping 10 / 40 / 100; head b: 0.95 / 1.0 keeping 20 / 100.
        let a = HeadOptions {
            recovery: vec![0.5, 0.9, 1.0],
            kept: vec![10, 40, 100],
        };
        let b = HeadOptions {
            recovery: vec![0.95, 1.0],
            kept: vec![20, 100],
        };
        let heads = [a, b];
        // T = 1: 100 + 100; T = 0.95: a -> 1.0 (100) + b 20 = 120; T = 0.9: 40 + 20 = 60;
        // T = 0.5: 10 + 20 = 30.
        let fit = |b| fit_threshold(&heads, b);
        assert_eq!(
            fit(200),
            Fit {
                threshold: 1.0,
                kept: 200,
                met: true
            }
        );
        assert_eq!(fit(199).threshold, 0.95);
        assert_eq!(fit(120).kept, 120);
        assert_eq!(
            fit(119),
            Fit {
                threshold: 0.9,
                kept: 60,
                met: true
            }
        );
        assert_eq!(
            fit(59),
            Fit {
                threshold: 0.5,
                kept: 30,
                met: true
            }
        );
        assert_eq!(
            fit(29),
            Fit {
                threshold: 0.0,
                kept: 30,
                met: false
            }
        );
    }
}
