//! Sampling from logits, and log-probabilities.
//!
//! [`Sampler`] turns a row of logits into a token id: greedy (argmax) when the temperature is
//! 0 or `top_k` is 1, otherwise temperature, then top-k, then top-p (nucleus), then a draw
//! from a seeded xoshiro256** generator, so that a run is reproducible from its seed. The
//! sampler keeps its scratch buffers: after the first call it does not allocate.
//!
//! NaN logits are treated as minus infinity (never chosen unless nothing else is possible).

use crate::error::{Error, Result};

/// Sampling settings. The default is greedy decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 means off.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`;
    /// 1.0 means off. Must be in (0, 1].
    pub top_p: f32,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig::greedy()
    }
}

impl SamplerConfig {
    pub fn greedy() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }

    /// Refuses values outside their range.
    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(Error::InvalidSetting(format!(
                "temperature must be a finite number >= 0 (0 = greedy), got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::InvalidSetting(format!(
                "top-p must be in (0, 1] (1 = off), got {}",
                self.top_p
            )));
        }
        Ok(())
    }

    /// Whether sampling reduces to argmax (no randomness is consumed then).
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }
}

/// xoshiro256** seeded through splitmix64: small, fast, and good enough for sampling.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        // splitmix64 never yields four zeros in a row, so the state is valid.
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Draws token ids from logits according to a [`SamplerConfig`].
#[derive(Debug, Clone)]
pub struct Sampler {
    cfg: SamplerConfig,
    rng: Rng,
    /// One packed key per candidate (scratch), see [`key`].
    keys: Vec<u64>,
}

/// A candidate packed so that ascending `u64` order is descending weight, then ascending id:
/// the bits of the complemented weight above the id. Weights are finite and >= 0, and the
/// bit patterns of such floats order like the floats. Sorting and selecting plain integers
/// is several times faster than going through an index into a weight table.
fn key(weight: f32, id: u32) -> u64 {
    (u64::from(!weight.to_bits()) << 32) | u64::from(id)
}

fn key_weight(k: u64) -> f32 {
    f32::from_bits(!((k >> 32) as u32))
}

fn key_id(k: u64) -> u32 {
    k as u32
}

/// Window examined first when looking for the nucleus: for a peaked distribution one
/// selection over the vocabulary finds it.
const NUCLEUS_FIRST: usize = 64;
/// Below this many candidates the nucleus search sorts instead of selecting.
const NUCLEUS_SORT: usize = 32;

impl Sampler {
    /// Checks the settings and seeds the generator.
    pub fn new(cfg: SamplerConfig) -> Result<Sampler> {
        cfg.validate()?;
        Ok(Sampler {
            rng: Rng::new(cfg.seed),
            cfg,
            keys: Vec::new(),
        })
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Restarts the random sequence as if the sampler had been created with `seed`.
    pub fn reseed(&mut self, seed: u64) {
        self.cfg.seed = seed;
        self.rng = Rng::new(seed);
    }

    /// Picks the next token. Empty logits give 0.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if logits.is_empty() {
            return 0;
        }
        if self.cfg.is_greedy() {
            return argmax(logits);
        }
        let max = finite_max(logits);
        if !max.is_finite() {
            // All minus infinity (or NaN), or some plus infinity: nothing to weigh.
            return argmax(logits);
        }
        let n = logits.len();
        let t = self.cfg.temperature;
        // Unnormalised probabilities after temperature, in (0, 1]; exactly 1 at the max.
        // Divide (not multiply by 1/t): with a tiny t, 0 * inf would give NaN at the max.
        let keys = &mut self.keys;
        keys.clear();
        let mut total = 0.0f64;
        keys.extend(logits.iter().enumerate().map(|(i, &l)| {
            let w = if l.is_nan() {
                0.0
            } else {
                ((l - max) / t).exp()
            };
            total += f64::from(w);
            key(w, i as u32)
        }));
        let u = self.rng.next_f64();

        if self.cfg.top_k > 0 && self.cfg.top_k < n {
            let k = self.cfg.top_k;
            keys.select_nth_unstable(k - 1);
            keys.truncate(k);
            total = keys.iter().map(|&k| f64::from(key_weight(k))).sum();
        }
        let top_p = f64::from(self.cfg.top_p);
        if top_p < 1.0 {
            let keep = nucleus(keys, top_p * total);
            keys.truncate(keep);
            total = keys.iter().map(|&k| f64::from(key_weight(k))).sum();
        }
        draw(u, total, keys)
    }
}

/// Reorders `keys` so that its first `len` entries are the nucleus: the fewest heaviest
/// candidates whose weights add up to `target` (all of them if rounding keeps the sum from
/// reaching it; at least one). Returns `len`. Expected time linear in `keys.len()`: a
/// weighted selection, not a sort.
fn nucleus(keys: &mut [u64], target: f64) -> usize {
    // Invariant: keys[..lo] are heavier than keys[lo..] and weigh `acc` together, acc <
    // target; the boundary lies in keys[lo..hi].
    let (mut lo, mut hi, mut acc) = (0usize, keys.len(), 0.0f64);
    let mut split = NUCLEUS_FIRST;
    while hi - lo > NUCLEUS_SORT {
        let mid = split.min((hi - lo) / 2);
        keys[lo..hi].select_nth_unstable(mid);
        let mass: f64 = keys[lo..=lo + mid]
            .iter()
            .map(|&k| f64::from(key_weight(k)))
            .sum();
        if acc + mass >= target {
            hi = lo + mid + 1;
        } else {
            acc += mass;
            lo += mid + 1;
        }
        split = usize::MAX;
    }
    keys[lo..hi].sort_unstable();
    for (i, &k) in keys[lo..hi].iter().enumerate() {
        acc += f64::from(key_weight(k));
        if acc >= target {
            return lo + i + 1;
        }
    }
    hi.max(1)
}

/// The candidate at which the running sum of weights passes `u * total`.
fn draw(u: f64, total: f64, keys: &[u64]) -> u32 {
    let r = u * total;
    let mut acc = 0.0f64;
    let mut last = None;
    for &k in keys {
        let w = key_weight(k);
        if w > 0.0 {
            acc += f64::from(w);
            last = Some(key_id(k));
            if r < acc {
                return key_id(k);
            }
        }
    }
    // Only reached through rounding (u * total at the very top of the range).
    last.or(keys.first().map(|&k| key_id(k))).unwrap_or(0)
}

/// Index of the largest logit, the lowest id among equals; NaN is ignored. 0 if empty or
/// all NaN.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in logits.iter().enumerate() {
        if x.is_nan() {
            continue;
        }
        match best {
            Some((_, b)) if x <= b => {}
            _ => best = Some((i, x)),
        }
    }
    best.map_or(0, |(i, _)| i as u32)
}

/// Largest non-NaN logit (minus infinity if none).
fn finite_max(logits: &[f32]) -> f32 {
    logits
        .iter()
        .copied()
        .filter(|x| !x.is_nan())
        .fold(f32::NEG_INFINITY, f32::max)
}

/// `ln(sum(exp(logits)))`, computed stably: the maximum is subtracted before exponentiating
/// and the sum is accumulated in f64. NaN logits count as minus infinity.
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = finite_max(logits);
    if !max.is_finite() {
        // Empty or all minus infinity: -inf; any plus infinity: +inf.
        return f64::from(max);
    }
    let sum: f64 = logits
        .iter()
        .filter(|x| !x.is_nan())
        .map(|&x| (f64::from(x) - f64::from(max)).exp())
        .sum();
    f64::from(max) + sum.ln()
}

/// Log-probability of token `id` under softmax(logits). Minus infinity for an id outside the
/// vocabulary or a NaN logit.
pub fn logprob_of(logits: &[f32], id: u32) -> f32 {
    let Some(&x) = logits.get(id as usize) else {
        return f32::NEG_INFINITY;
    };
    if x.is_nan() {
        return f32::NEG_INFINITY;
    }
    let lse = log_sum_exp(logits);
    if lse == f64::INFINITY {
        // The mass is shared equally by the infinite logits.
        if x == f32::INFINITY {
            let count = logits.iter().filter(|&&l| l == f32::INFINITY).count();
            return -(count as f64).ln() as f32;
        }
        return f32::NEG_INFINITY;
    }
    (f64::from(x) - lse) as f32
}

/// The `k` most likely tokens as (id, log-probability), most likely first (lower id first
/// among equals). Fewer if the vocabulary is smaller.
pub fn log_softmax_top(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let n = logits.len();
    let k = k.min(n);
    if k == 0 {
        return Vec::new();
    }
    let key = |i: u32| {
        let x = logits[i as usize];
        if x.is_nan() {
            f32::NEG_INFINITY
        } else {
            x
        }
    };
    let by_logit = |a: &u32, b: &u32| key(*b).total_cmp(&key(*a)).then(a.cmp(b));
    let mut ids: Vec<u32> = (0..n as u32).collect();
    if k < n {
        ids.select_nth_unstable_by(k - 1, by_logit);
        ids.truncate(k);
    }
    ids.sort_unstable_by(by_logit);
    ids.into_iter()
        .map(|i| (i, logprob_of(logits, i)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> SamplerConfig {
        SamplerConfig {
            temperature,
            top_k,
            top_p,
            seed,
        }
    }

    /// Deterministic pseudo-random logits in [-scale, scale).
    fn logits(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut r = Rng::new(seed);
        (0..n)
            .map(|_| (r.next_f64() as f32 * 2.0 - 1.0) * scale)
            .collect()
    }

    /// Frequencies of each id over `draws` samples.
    fn frequencies(s: &mut Sampler, logits: &[f32], draws: usize) -> Vec<f64> {
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..draws {
            counts[s.sample(logits) as usize] += 1;
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    fn assert_close(got: &[f64], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol,
                "id {i}: got {g}, want {w} (all: {got:?})"
            );
        }
    }

    #[test]
    fn rng_matches_reference_vectors() {
        // xoshiro256** from the state [1, 2, 3, 4] (reference implementation).
        let mut r = Rng { s: [1, 2, 3, 4] };
        let got: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(got, [11520, 0, 1509978240, 1215971899390074240]);
        // splitmix64 from 0: first output 0xe220a8397b1dcdaf.
        assert_eq!(Rng::new(0).s[0], 0xe220_a839_7b1d_cdaf);
        let mut r = Rng::new(7);
        for _ in 0..1000 {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x));
        }
    }

    #[test]
    fn greedy_picks_argmax_lowest_on_ties() {
        let mut s = Sampler::new(SamplerConfig::greedy()).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, -2.0, 2.9]), 1);
        assert_eq!(s.sample(&[1.0, 5.0, 5.0, 5.0]), 1);
        assert_eq!(s.sample(&[f32::NAN, 1.0, f32::NAN]), 1);
        assert_eq!(s.sample(&[f32::NEG_INFINITY; 3]), 0);
        assert_eq!(s.sample(&[]), 0);
        let l = logits(1000, 3, 10.0);
        let best = (0..l.len()).max_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap();
        assert_eq!(s.sample(&l), best as u32);
    }

    #[test]
    fn top_k_one_is_greedy_at_any_temperature() {
        for (j, t) in [0.01f32, 0.7, 1.0, 3.0, 100.0].into_iter().enumerate() {
            let mut s = Sampler::new(cfg(t, 1, 0.9, j as u64)).unwrap();
            for seed in 0..20 {
                let l = logits(500, seed, 5.0);
                assert_eq!(s.sample(&l), argmax(&l), "t={t} seed={seed}");
            }
        }
    }

    #[test]
    fn seeds_make_runs_reproducible() {
        let l = logits(200, 11, 1.0);
        let run = |c: &SamplerConfig| {
            let mut s = Sampler::new(c.clone()).unwrap();
            (0..64).map(|_| s.sample(&l)).collect::<Vec<u32>>()
        };
        for c in [
            cfg(1.0, 0, 1.0, 42),
            cfg(0.8, 40, 0.95, 42),
            cfg(1.2, 0, 0.9, 42),
        ] {
            assert_eq!(run(&c), run(&c));
            assert_ne!(run(&c), run(&SamplerConfig { seed: 43, ..c }));
        }
        // Reseeding restarts the sequence.
        let mut s = Sampler::new(cfg(1.0, 0, 1.0, 5)).unwrap();
        let a: Vec<u32> = (0..16).map(|_| s.sample(&l)).collect();
        s.reseed(5);
        let b: Vec<u32> = (0..16).map(|_| s.sample(&l)).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn temperature_reshapes_the_distribution() {
        // p = [0.25, 0.75] at t = 1; at t = 2 the weights are 1 and sqrt(3).
        let l = [0.0f32, 3f32.ln()];
        let mut s = Sampler::new(cfg(1.0, 0, 1.0, 1)).unwrap();
        assert_close(&frequencies(&mut s, &l, 100_000), &[0.25, 0.75], 0.01);
        let mut s = Sampler::new(cfg(2.0, 0, 1.0, 2)).unwrap();
        let w = 3f64.sqrt();
        assert_close(
            &frequencies(&mut s, &l, 100_000),
            &[1.0 / (1.0 + w), w / (1.0 + w)],
            0.01,
        );
    }

    #[test]
    fn top_p_keeps_the_expected_set() {
        let p = [0.5f64, 0.3, 0.15, 0.05];
        // Shuffled ids, so that order by id and order by probability differ.
        let order = [2usize, 0, 3, 1];
        let mut l = vec![0f32; 4];
        for (rank, &id) in order.iter().enumerate() {
            l[id] = p[rank].ln() as f32;
        }
        let expect = |kept: usize| {
            let z: f64 = p[..kept].iter().sum();
            let mut e = vec![0.0; 4];
            for rank in 0..kept {
                e[order[rank]] = p[rank] / z;
            }
            e
        };
        // 0.5 + 0.3 < 0.85 <= 0.95: the three most likely stay.
        let mut s = Sampler::new(cfg(1.0, 0, 0.85, 9)).unwrap();
        assert_close(&frequencies(&mut s, &l, 100_000), &expect(3), 0.01);
        // Below the top probability: only the top token.
        let mut s = Sampler::new(cfg(1.0, 0, 0.4, 9)).unwrap();
        assert_close(&frequencies(&mut s, &l, 1000), &expect(1), 0.0);
        // 0.5 < 0.6: two stay.
        let mut s = Sampler::new(cfg(1.0, 0, 0.6, 9)).unwrap();
        assert_close(&frequencies(&mut s, &l, 100_000), &expect(2), 0.01);
        // top-k first: k = 2 leaves [0.625, 0.375], which top-p 0.9 does not cut further.
        let mut s = Sampler::new(cfg(1.0, 2, 0.9, 9)).unwrap();
        assert_close(&frequencies(&mut s, &l, 100_000), &expect(2), 0.01);
        // top-k alone.
        let mut s = Sampler::new(cfg(1.0, 3, 1.0, 9)).unwrap();
        assert_close(&frequencies(&mut s, &l, 100_000), &expect(3), 0.01);
    }

    #[test]
    fn nucleus_larger_than_the_first_window() {
        // 2,000 equal logits: top-p 0.5 keeps ids 0..1000 (lower ids first among equals),
        // which forces the widening search well past its first 64 candidates.
        let l = vec![0.25f32; 2000];
        let mut s = Sampler::new(cfg(1.0, 0, 0.5, 3)).unwrap();
        let mut counts = vec![0usize; 10];
        for _ in 0..20_000 {
            let id = s.sample(&l) as usize;
            assert!(id < 1000, "{id}");
            counts[id / 100] += 1;
        }
        for c in counts {
            assert!((c as f64 / 2000.0 - 1.0).abs() < 0.15, "{c}");
        }
        // A peaked distribution over a large vocabulary: the nucleus matches a full sort.
        let l = logits(20_000, 8, 12.0);
        let mut sorted: Vec<usize> = (0..l.len()).collect();
        sorted.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
        let p: Vec<f64> = sorted
            .iter()
            .map(|&i| f64::from(l[i] - l[sorted[0]]).exp())
            .collect();
        let total: f64 = p.iter().sum();
        let mut acc = 0.0;
        let keep = p.iter().position(|&x| {
            acc += x;
            acc >= 0.9 * total
        });
        let allowed: std::collections::HashSet<u32> =
            sorted[..=keep.unwrap()].iter().map(|&i| i as u32).collect();
        assert!(allowed.len() > 64, "{}", allowed.len());
        let mut s = Sampler::new(cfg(1.0, 0, 0.9, 4)).unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let id = s.sample(&l);
            assert!(allowed.contains(&id), "{id}");
            seen.insert(id);
        }
        assert!(
            seen.len() > allowed.len() / 2,
            "{} of {}",
            seen.len(),
            allowed.len()
        );
    }

    #[test]
    fn keys_order_by_weight_then_id() {
        let mut ks = [
            key(0.5, 3),
            key(1.0, 7),
            key(0.5, 1),
            key(0.0, 0),
            key(1.0, 2),
        ];
        ks.sort_unstable();
        let order: Vec<(f32, u32)> = ks.iter().map(|&k| (key_weight(k), key_id(k))).collect();
        assert_eq!(order, [(1.0, 2), (1.0, 7), (0.5, 1), (0.5, 3), (0.0, 0)]);
    }

    #[test]
    fn nucleus_matches_a_full_sort() {
        let mut r = Rng::new(99);
        for case in 0..300 {
            let n = 1 + (r.next_u64() % 3000) as usize;
            let sharp = 1.0 + (case % 7) as f64 * 3.0;
            let mut ks: Vec<u64> = (0..n)
                .map(|i| {
                    // Some exact ties, a wide range of magnitudes.
                    let w = (-(r.next_f64() * sharp).floor() * 0.5).exp() as f32;
                    key(w, i as u32)
                })
                .collect();
            let total: f64 = ks.iter().map(|&k| f64::from(key_weight(k))).sum();
            let target = r.next_f64() * total;
            let mut sorted = ks.clone();
            sorted.sort_unstable();
            let mut acc = 0.0;
            let want = sorted
                .iter()
                .position(|&k| {
                    acc += f64::from(key_weight(k));
                    acc >= target
                })
                .map_or(n, |p| p + 1);
            let got = nucleus(&mut ks, target);
            // Summation order differs, so allow the boundary to move by one on rounding.
            assert!(got.abs_diff(want) <= 1, "case {case}: {got} vs {want}");
            let mut kept = ks[..got].to_vec();
            kept.sort_unstable();
            assert_eq!(kept, sorted[..got], "case {case}");
        }
    }

    #[test]
    fn impossible_tokens_are_never_drawn() {
        let l = [f32::NEG_INFINITY, 0.0, f32::NAN, 0.0];
        for c in [
            cfg(1.0, 0, 1.0, 1),
            cfg(1.0, 3, 1.0, 1),
            cfg(1.0, 0, 0.99, 1),
        ] {
            let mut s = Sampler::new(c.clone()).unwrap();
            for _ in 0..1000 {
                let id = s.sample(&l);
                assert!(id == 1 || id == 3, "{c:?}: {id}");
            }
        }
        // A tiny temperature is greedy in effect, without NaNs.
        let mut s = Sampler::new(cfg(1e-30, 0, 1.0, 1)).unwrap();
        assert_eq!(s.sample(&[1.0, 2.0, 1.5]), 1);
        // Plus infinity wins.
        assert_eq!(s.sample(&[1.0, f32::INFINITY, 1.5]), 1);
    }

    #[test]
    fn no_allocation_after_the_first_call() {
        let l = logits(5000, 1, 4.0);
        for c in [
            cfg(0.9, 0, 0.9, 1),
            cfg(0.9, 50, 0.95, 1),
            cfg(0.9, 0, 1.0, 1),
        ] {
            let mut s = Sampler::new(c).unwrap();
            s.sample(&l);
            let keys = s.keys.as_ptr();
            for _ in 0..50 {
                s.sample(&l);
            }
            assert_eq!(keys, s.keys.as_ptr());
        }
    }

    #[test]
    fn invalid_settings_are_refused() {
        let bad = [
            cfg(-0.1, 0, 1.0, 0),
            cfg(f32::NAN, 0, 1.0, 0),
            cfg(f32::INFINITY, 0, 1.0, 0),
            cfg(1.0, 0, 0.0, 0),
            cfg(1.0, 0, -0.5, 0),
            cfg(1.0, 0, 1.01, 0),
            cfg(1.0, 0, f32::NAN, 0),
        ];
        for c in bad {
            assert!(
                matches!(Sampler::new(c.clone()), Err(Error::InvalidSetting(_))),
                "{c:?} accepted"
            );
        }
        for c in [
            SamplerConfig::default(),
            cfg(0.7, 40, 0.95, 1),
            cfg(2.0, 0, 1.0, 0),
        ] {
            assert!(c.validate().is_ok(), "{c:?}");
        }
    }

    #[test]
    fn logprobs_are_normalised_and_stable() {
        for (seed, offset) in [(1u64, 0.0f32), (2, 1e4), (3, -1e4)] {
            let l: Vec<f32> = logits(3000, seed, 20.0)
                .iter()
                .map(|x| x + offset)
                .collect();
            let all = log_softmax_top(&l, l.len());
            assert_eq!(all.len(), l.len());
            let total: f64 = all.iter().map(|&(_, lp)| f64::from(lp).exp()).sum();
            assert!((total - 1.0).abs() < 1e-4, "{total}");
            assert!(all.windows(2).all(|w| w[0].1 >= w[1].1));
            let top = log_softmax_top(&l, 5);
            assert_eq!(&top[..], &all[..5]);
            assert_eq!(top[0].0, argmax(&l));
            for &(id, lp) in &top {
                assert_eq!(lp, logprob_of(&l, id));
                assert!(lp.is_finite() && lp <= 0.0);
            }
        }
        // Exact small case: uniform over four.
        let lp = logprob_of(&[3.0; 4], 2);
        assert!((lp - 0.25f32.ln()).abs() < 1e-6);
        assert_eq!(log_softmax_top(&[1.0, 2.0], 0), vec![]);
        assert_eq!(log_softmax_top(&[1.0, 2.0], 9).len(), 2);
        assert_eq!(logprob_of(&[1.0], 5), f32::NEG_INFINITY);
        assert_eq!(logprob_of(&[0.0, f32::INFINITY], 1), 0.0);
        assert_eq!(logprob_of(&[0.0, f32::INFINITY], 0), f32::NEG_INFINITY);
    }
}
