//! Fidelity metrics of a compressed cache against the full cache, as llama-perplexity's
//! KL-divergence section reports them, plus ROUGE-L and answer extraction for generation tasks.

/// Log-softmax in f64 (the distributions compared are close; f32 would drown the difference).
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max
        + logits
            .iter()
            .map(|&l| (l as f64 - max).exp())
            .sum::<f64>()
            .ln();
    logits.iter().map(|&l| l as f64 - lse).collect()
}

/// One predicted position, full cache against compressed cache.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenCompare {
    /// KL(P_full || P_kv).
    pub kld: f64,
    /// Both caches put the same token on top.
    pub same_top: bool,
    /// Probability of the actual next token under each.
    pub p_full: f64,
    pub p_kv: f64,
    /// Negative log-likelihood of the actual next token under each.
    pub nll_full: f64,
    pub nll_kv: f64,
}

fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Compares the two distributions predicting `target`.
pub fn compare(full_logits: &[f32], kv_logits: &[f32], target: u32) -> TokenCompare {
    let lf = log_softmax(full_logits);
    let lk = log_softmax(kv_logits);
    let kld = lf
        .iter()
        .zip(&lk)
        .map(|(&a, &b)| a.exp() * (a - b))
        .sum::<f64>()
        .max(0.0);
    let t = target as usize;
    TokenCompare {
        kld,
        same_top: argmax(&lf) == argmax(&lk),
        p_full: lf[t].exp(),
        p_kv: lk[t].exp(),
        nll_full: -lf[t],
        nll_kv: -lk[t],
    }
}

/// The block llama-perplexity prints for KL divergence, over many positions.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KldSummary {
    pub n: usize,
    pub ppl_full: f64,
    pub ppl_kv: f64,
    /// Mean of ln(p_full / p_kv) of the actual tokens = ln(PPL(kv) / PPL(full)).
    pub ln_ppl_ratio: f64,
    pub ln_ppl_ratio_err: f64,
    pub mean_kld: f64,
    pub mean_kld_err: f64,
    pub kld_max: f64,
    pub kld_p999: f64,
    pub kld_p99: f64,
    pub kld_median: f64,
    /// Fraction of positions with the same top token.
    pub same_top: f64,
    pub same_top_err: f64,
    /// Root mean square of p_kv - p_full of the actual token.
    pub rms_dp: f64,
}

fn mean_err(xs: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = xs.clone().count() as f64;
    let mean = xs.clone().sum::<f64>() / n;
    let var = xs.map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, (var / n).sqrt())
}

/// Value at quantile `q` of sorted data (nearest rank, as llama-perplexity does).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

impl KldSummary {
    /// `None` for no positions.
    pub fn from(rows: &[TokenCompare]) -> Option<KldSummary> {
        if rows.is_empty() {
            return None;
        }
        let n = rows.len();
        let (mean_kld, mean_kld_err) = mean_err(rows.iter().map(|r| r.kld));
        let (ln_ratio, ln_ratio_err) = mean_err(rows.iter().map(|r| r.nll_kv - r.nll_full));
        let (same_top, same_top_err) =
            mean_err(rows.iter().map(|r| if r.same_top { 1.0 } else { 0.0 }));
        let mut k: Vec<f64> = rows.iter().map(|r| r.kld).collect();
        k.sort_by(|a, b| a.total_cmp(b));
        let mean = |f: &dyn Fn(&TokenCompare) -> f64| rows.iter().map(f).sum::<f64>() / n as f64;
        Some(KldSummary {
            n,
            ppl_full: mean(&|r| r.nll_full).exp(),
            ppl_kv: mean(&|r| r.nll_kv).exp(),
            ln_ppl_ratio: ln_ratio,
            ln_ppl_ratio_err: ln_ratio_err,
            mean_kld,
            mean_kld_err,
            kld_max: *k.last().unwrap_or(&0.0),
            kld_p999: quantile(&k, 0.999),
            kld_p99: quantile(&k, 0.99),
            kld_median: quantile(&k, 0.5),
            same_top,
            same_top_err,
            rms_dp: mean(&|r| (r.p_kv - r.p_full).powi(2)).sqrt(),
        })
    }

    /// The lines llama-perplexity users know.
    pub fn render(&self) -> String {
        format!(
            "PPL(full)        : {:10.4}\n\
             PPL(kv)          : {:10.4}\n\
             ln(PPL(kv)/PPL(full)): {:10.6} +/- {:.6}\n\
             Mean    KLD      : {:10.6} +/- {:.6}\n\
             Maximum KLD      : {:10.6}\n\
             99.9%   KLD      : {:10.6}\n\
             99.0%   KLD      : {:10.6}\n\
             Median  KLD      : {:10.6}\n\
             Same top p       : {:7.3} +/- {:.3} %\n\
             RMS Δp           : {:7.3} %\n",
            self.ppl_full,
            self.ppl_kv,
            self.ln_ppl_ratio,
            self.ln_ppl_ratio_err,
            self.mean_kld,
            self.mean_kld_err,
            self.kld_max,
            self.kld_p999,
            self.kld_p99,
            self.kld_median,
            self.same_top * 100.0,
            self.same_top_err * 100.0,
            self.rms_dp * 100.0,
        )
    }
}

/// ROUGE-L F1 between two token sequences (longest common subsequence).
pub fn rouge_l_f1<T: PartialEq>(candidate: &[T], reference: &[T]) -> f64 {
    if candidate.is_empty() || reference.is_empty() {
        return if candidate.is_empty() && reference.is_empty() {
            1.0
        } else {
            0.0
        };
    }
    // One row of the LCS table at a time.
    let mut prev = vec![0usize; reference.len() + 1];
    let mut cur = vec![0usize; reference.len() + 1];
    for c in candidate {
        for (j, r) in reference.iter().enumerate() {
            cur[j + 1] = if c == r {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    let lcs = prev[reference.len()] as f64;
    if lcs == 0.0 {
        return 0.0;
    }
    let p = lcs / candidate.len() as f64;
    let r = lcs / reference.len() as f64;
    2.0 * p * r / (p + r)
}

/// Words for ROUGE-L: lower-cased alphanumeric runs.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

/// The last number in a text (GSM8K answers), without thousands separators; "1,234.50" -> "1234.5".
pub fn last_number(text: &str) -> Option<String> {
    let mut last = None;
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let neg = chars[i] == '-' && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit());
        if chars[i].is_ascii_digit() || neg {
            let start = i;
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || ((chars[i] == ',' || chars[i] == '.')
                        && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit())))
            {
                i += 1;
            }
            let raw: String = chars[start..i].iter().filter(|&&c| c != ',').collect();
            last = Some(normalise_number(&raw));
        } else {
            i += 1;
        }
    }
    last
}

/// "42.0" -> "42", "3.50" -> "3.5": answers compare as numbers written the shortest way.
pub fn normalise_number(s: &str) -> String {
    let s = s.replace(',', "");
    if let Some((int, frac)) = s.split_once('.') {
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            int.to_string()
        } else {
            format!("{int}.{frac}")
        }
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kld_of_identical_logits_is_exactly_zero() {
        let l = [0.3f32, -1.0, 2.5, 0.0];
        let c = compare(&l, &l, 2);
        assert_eq!(c.kld, 0.0);
        assert!(c.same_top);
        assert_eq!(c.p_full, c.p_kv);
    }

    #[test]
    fn kld_on_a_hand_computed_pair() {
        // P = softmax(ln 0.5, ln 0.5) = (0.5, 0.5); Q = (0.25, 0.75).
        // KL(P||Q) = 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln 2 + 0.5 ln(2/3) = 0.5 ln(4/3).
        let p = [0.5f32.ln(), 0.5f32.ln()];
        let q = [0.25f32.ln(), 0.75f32.ln()];
        let c = compare(&p, &q, 1);
        assert!(
            (c.kld - 0.5 * (4.0f64 / 3.0).ln()).abs() < 1e-6,
            "{}",
            c.kld
        );
        // Top of P is token 0 (tie broken by the lowest id), of Q token 1.
        assert!(!c.same_top);
        assert!((c.p_kv - 0.75).abs() < 1e-6 && (c.p_full - 0.5).abs() < 1e-6);
    }

    #[test]
    fn summary_statistics_by_hand() {
        let row = |kld: f64, same: bool, p_full: f64, p_kv: f64| TokenCompare {
            kld,
            same_top: same,
            p_full,
            p_kv,
            nll_full: -p_full.ln(),
            nll_kv: -p_kv.ln(),
        };
        let rows = [
            row(0.0, true, 0.5, 0.5),
            row(0.2, false, 0.5, 0.25),
            row(0.1, true, 0.25, 0.5),
        ];
        let s = KldSummary::from(&rows).unwrap();
        assert!((s.mean_kld - 0.1).abs() < 1e-12);
        assert_eq!(s.kld_max, 0.2);
        assert_eq!(s.kld_median, 0.1);
        assert!((s.same_top - 2.0 / 3.0).abs() < 1e-12);
        // dp = 0, -0.25, 0.25: RMS = sqrt(0.125 / 3).
        assert!((s.rms_dp - (0.125f64 / 3.0).sqrt()).abs() < 1e-12);
        // ln ratios: 0, ln 2, -ln 2 -> mean 0; PPL(full) = exp(mean nll) = (2 * 2 * 4)^(1/3).
        assert!(s.ln_ppl_ratio.abs() < 1e-12);
        assert!((s.ppl_full - 16f64.powf(1.0 / 3.0)).abs() < 1e-9);
        assert!(KldSummary::from(&[]).is_none());
    }

    #[test]
    fn rouge_l_by_hand() {
        // LCS of "a b c d" and "a c d e" is "a c d" (3): P = 3/4, R = 3/4, F1 = 0.75.
        let a = words("a b c d");
        let b = words("A c, d e");
        assert!((rouge_l_f1(&a, &b) - 0.75).abs() < 1e-12);
        assert_eq!(rouge_l_f1(&a, &a), 1.0);
        assert_eq!(rouge_l_f1(&words("x y"), &words("z")), 0.0);
        // LCS 1 of lengths 1 and 4: P = 1, R = 1/4, F1 = 2 * 0.25 / 1.25 = 0.4.
        assert!((rouge_l_f1(&words("d"), &a) - 0.4).abs() < 1e-12);
    }

    #[test]
    fn last_number_extraction() {
        assert_eq!(
            last_number("so 3 apples cost $1,234.50 in total").as_deref(),
            Some("1234.5")
        );
        assert_eq!(last_number("The answer is 42.").as_deref(), Some("42"));
        assert_eq!(last_number("went from 5 to -7").as_deref(), Some("-7"));
        assert_eq!(last_number("no digits here"), None);
        assert_eq!(normalise_number("18.00"), "18");
    }
}
