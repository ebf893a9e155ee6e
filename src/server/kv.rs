//! What a request's KV cache may cost: the policy and T it asks for ([`KvRequest`]), what
//! admission grants ([`KvGrant`]), and the estimate of its bytes that the KV budget admits by
//! ([`estimate_kv_bytes`]). Pure data and arithmetic, shared by request parsing, admission
//! and the engine.

use fastgen::kv_cache::KvDtype;

/// T when a request names none: the library's default.
pub const DEFAULT_RECOVERY: f64 = fastgen::compress::DEFAULT_RECOVERY;

pub use fastgen::compress::KvKind;

/// The methods a request may name in `kv_policy`: those whose peak bytes admission can
/// bound up front (`kept_fraction`). The others stay the CLI's and the evaluation's.
pub const SERVED: [KvKind; 4] = [KvKind::FastGen, KvKind::Full, KvKind::Window, KvKind::H2o];

/// A served method by its library name (`fastgen`, `full`, `window`, `h2o`).
pub fn served_kind(name: &str) -> Option<KvKind> {
    SERVED.into_iter().find(|k| k.to_string() == name)
}

/// The served names, for error messages.
pub fn served_names() -> String {
    SERVED.map(|k| k.to_string()).join(", ")
}

/// Whether admission may lower T to fit the KV budget (FastGen only: the baselines keep
/// their configured budgets).
pub fn recovery_adjustable(kind: KvKind) -> bool {
    kind == KvKind::FastGen
}

/// What the request asked for (checked: 0 < recovery <= 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KvRequest {
    pub kind: KvKind,
    pub recovery: f64,
    /// FastGen: the cache stays full until the sequence holds this many tokens
    /// (`kv_compress_from`; `KvSettings::compress_from`).
    pub compress_from: usize,
}

/// What admission granted: the policy with the T it runs at and the bytes reserved for it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KvGrant {
    pub kind: KvKind,
    pub recovery_requested: f64,
    /// Lower than requested when the KV budget did not fit the requested T (fastgen only).
    pub recovery: f64,
    pub compress_from: usize,
    pub reserved_bytes: u64,
}

/// The cache geometry the estimate works from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvShape {
    pub n_layers: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub dtype: KvDtype,
}

impl KvShape {
    /// Keys and values of one token over all layers and KV heads.
    pub fn full_bytes_per_token(&self) -> u64 {
        (self.n_layers * self.n_kv_heads * self.dtype.entry_bytes(self.head_dim)) as u64
    }
}

/// Bytes of KV a request of `tokens` (prompt plus generation) would hold at its largest
/// under `kind` at recovery `t`. The KV budget admits requests by this figure. FastGen holds
/// every token until `compress_from`, so its peak is the larger of that and its kept share.
pub fn estimate_kv_bytes(
    shape: &KvShape,
    tokens: usize,
    kind: KvKind,
    t: f64,
    compress_from: usize,
) -> u64 {
    let full = tokens as u64 * shape.full_bytes_per_token();
    let whole = match kind {
        KvKind::FastGen if tokens > 0 => tokens.min(compress_from) as f64 / tokens as f64,
        _ => 0.0,
    };
    (full as f64 * kept_fraction(kind, t).max(whole)).ceil() as u64
}

/// The fraction of the full cache a policy keeps, as a function of T: an upper estimate used
/// only for admission (the real figure depends on the prompt and is reported afterwards).
///
/// For FastGen it interpolates kept fractions measured with `--kv fastgen --gqa-agg min` on
/// 1,000 tokens of essay prose (`fastgen profile --recovery T`: SmolLM2 and Qwen2.5 at
/// T = 0.90 / 0.95 / 0.98 / 0.99 kept at most 87% / 93% / 99% / 100%; the default `mean`
/// aggregation keeps less, so these stay upper estimates), rising to 1 at T = 1; it never
/// decreases as T rises, which admission relies on. The
/// baselines keep their configured budgets: window 30% plus the sink, h2o 30% + 30%.
fn kept_fraction(kind: KvKind, t: f64) -> f64 {
    const FASTGEN: [(f64, f64); 5] = [
        (0.90, 0.87),
        (0.95, 0.93),
        (0.98, 0.99),
        (0.99, 1.0),
        (1.0, 1.0),
    ];
    match kind {
        KvKind::Full => 1.0,
        KvKind::Window => 0.32,
        KvKind::H2o => 0.62,
        // Not served: bounded by the full cache.
        KvKind::Fixed(_) | KvKind::SnapKv | KvKind::AdaKv => 1.0,
        KvKind::FastGen => {
            if t <= FASTGEN[0].0 {
                return FASTGEN[0].1;
            }
            for w in FASTGEN.windows(2) {
                let ((t0, k0), (t1, k1)) = (w[0], w[1]);
                if t <= t1 {
                    return k0 + (k1 - k0) * (t - t0) / (t1 - t0);
                }
            }
            1.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOL: KvShape = KvShape {
        n_layers: 30,
        n_kv_heads: 3,
        head_dim: 64,
        dtype: KvDtype::F16,
    };

    #[test]
    fn estimates_scale_the_full_bytes_and_rise_with_t() {
        assert_eq!(SMOL.full_bytes_per_token(), 2 * 30 * 3 * 64 * 2);
        let full = 100 * 23040;
        assert_eq!(estimate_kv_bytes(&SMOL, 100, KvKind::Full, 0.5, 0), full);
        assert_eq!(
            estimate_kv_bytes(&SMOL, 100, KvKind::Window, 0.9, 0),
            (full as f64 * 0.32).ceil() as u64
        );
        assert_eq!(
            estimate_kv_bytes(&SMOL, 100, KvKind::H2o, 0.9, 0),
            (full as f64 * 0.62).ceil() as u64
        );
        // FastGen: 87% at T = 0.90, halfway between 0.95 and 0.98 is (0.93 + 0.99) / 2.
        assert_eq!(
            estimate_kv_bytes(&SMOL, 100, KvKind::FastGen, 0.9, 0),
            (full as f64 * 0.87).ceil() as u64
        );
        assert!((kept_fraction(KvKind::FastGen, 0.965) - 0.96).abs() < 1e-6);
        assert_eq!(estimate_kv_bytes(&SMOL, 100, KvKind::FastGen, 1.0, 0), full);
        // Deferred compression: whole until `compress_from`, whatever T.
        assert_eq!(
            estimate_kv_bytes(&SMOL, 100, KvKind::FastGen, 0.9, 512),
            full
        );
        assert_eq!(
            estimate_kv_bytes(&SMOL, 1000, KvKind::FastGen, 0.9, 950),
            (10.0 * full as f64 * 0.95).ceil() as u64
        );
        assert_eq!(
            estimate_kv_bytes(&SMOL, 1000, KvKind::FastGen, 0.9, 512),
            (10.0 * full as f64 * 0.87).ceil() as u64
        );
        assert_eq!(
            estimate_kv_bytes(&SMOL, 100, KvKind::Window, 0.9, 512),
            (full as f64 * 0.32).ceil() as u64
        );
        let mut last = 0;
        for i in 0..=100 {
            let b = estimate_kv_bytes(&SMOL, 100, KvKind::FastGen, i as f64 / 100.0, 0);
            assert!(b >= last, "estimate falls at T = {}", i as f64 / 100.0);
            last = b;
        }
    }

    #[test]
    fn served_names_round_trip() {
        for kind in SERVED {
            assert_eq!(served_kind(&kind.to_string()), Some(kind));
        }
        assert_eq!(served_names(), "fastgen, full, window, h2o");
        assert_eq!(served_kind("FastGen"), None);
        assert_eq!(served_kind("snapkv"), None);
    }
}
