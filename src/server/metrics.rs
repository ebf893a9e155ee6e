//! Counters and gauges for `GET /metrics`, in Prometheus' text format (version 0.0.4).

use super::admission::Snapshot;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds of the pruned-ratio histogram's buckets.
const PRUNED_BUCKETS: [f64; 10] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

#[derive(Default)]
struct Histogram {
    /// Cumulative counts per bucket of `PRUNED_BUCKETS`.
    buckets: [u64; PRUNED_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// What the engine holds now, read at each scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineGauges {
    pub kv_bytes_in_use: u64,
    pub kept_conversations: usize,
    pub kept_bytes: u64,
}

#[derive(Default)]
pub struct Metrics {
    /// (route, status) -> count.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    /// Tokens decoded after the first, and the time it took (µs), summed over requests.
    decode_tokens: AtomicU64,
    decode_us: AtomicU64,
    /// Decode rate of the last finished request, f64 bits.
    last_decode_tok_s: AtomicU64,
    cancelled: AtomicU64,
    pruned: Mutex<Histogram>,
}

impl Metrics {
    pub fn count_request(&self, route: &'static str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route, status)).or_default() += 1;
        }
    }

    pub fn count_cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a finished (or cancelled) generation.
    pub fn record_generation(
        &self,
        prompt_tokens: usize,
        generated: usize,
        decode_ms: f64,
        pruned_ratio: f64,
    ) {
        self.prompt_tokens
            .fetch_add(prompt_tokens as u64, Ordering::Relaxed);
        self.generated_tokens
            .fetch_add(generated as u64, Ordering::Relaxed);
        let decoded = generated.saturating_sub(1) as u64;
        self.decode_tokens.fetch_add(decoded, Ordering::Relaxed);
        self.decode_us
            .fetch_add((decode_ms * 1e3) as u64, Ordering::Relaxed);
        if decoded > 0 && decode_ms > 0.0 {
            let rate = decoded as f64 / (decode_ms / 1e3);
            self.last_decode_tok_s
                .store(rate.to_bits(), Ordering::Relaxed);
        }
        if let Ok(mut h) = self.pruned.lock() {
            h.count += 1;
            h.sum += pruned_ratio;
            for (b, &le) in h.buckets.iter_mut().zip(&PRUNED_BUCKETS) {
                if pruned_ratio <= le {
                    *b += 1;
                }
            }
        }
    }

    pub fn render(
        &self,
        adm: Snapshot,
        engine: EngineGauges,
        slots: usize,
        budget: Option<u64>,
    ) -> String {
        let mut o = String::new();
        let head = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut o,
            "fastgen_requests_total",
            "counter",
            "HTTP requests by route and status.",
        );
        if let Ok(m) = self.requests.lock() {
            for ((route, status), n) in m.iter() {
                let _ = writeln!(
                    o,
                    "fastgen_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let counters = [
            (
                "fastgen_prompt_tokens_total",
                "Prompt tokens of admitted requests.",
                &self.prompt_tokens,
            ),
            (
                "fastgen_generated_tokens_total",
                "Tokens generated.",
                &self.generated_tokens,
            ),
            (
                "fastgen_decode_tokens_total",
                "Tokens decoded after each request's first.",
                &self.decode_tokens,
            ),
            (
                "fastgen_requests_cancelled_total",
                "Generations stopped because the client went away or the server shut down.",
                &self.cancelled,
            ),
        ];
        for (name, help, v) in counters {
            head(&mut o, name, "counter", help);
            let _ = writeln!(o, "{name} {}", v.load(Ordering::Relaxed));
        }
        head(
            &mut o,
            "fastgen_decode_seconds_total",
            "counter",
            "Time spent decoding, summed over requests.",
        );
        let _ = writeln!(
            o,
            "fastgen_decode_seconds_total {}",
            self.decode_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        head(
            &mut o,
            "fastgen_decode_tokens_per_second",
            "gauge",
            "Decode rate of the last finished request.",
        );
        let _ = writeln!(
            o,
            "fastgen_decode_tokens_per_second {}",
            f64::from_bits(self.last_decode_tok_s.load(Ordering::Relaxed))
        );
        let gauges: [(&str, &str, f64); 8] = [
            (
                "fastgen_kv_bytes_in_use",
                "KV-cache bytes allocated by running requests (after the last step).",
                engine.kv_bytes_in_use as f64,
            ),
            (
                "fastgen_kept_conversations",
                "Finished conversations whose KV cache is kept for their next turn.",
                engine.kept_conversations as f64,
            ),
            (
                "fastgen_kept_conversation_bytes",
                "KV-cache bytes of the kept conversations.",
                engine.kept_bytes as f64,
            ),
            (
                "fastgen_kv_bytes_reserved",
                "KV-cache bytes reserved by admission for running requests.",
                adm.reserved as f64,
            ),
            (
                "fastgen_kv_budget_bytes",
                "The KV budget (--kv-budget-mib); -1 when unlimited.",
                budget.map_or(-1.0, |b| b as f64),
            ),
            (
                "fastgen_queue_depth",
                "Requests waiting for a slot.",
                adm.waiting as f64,
            ),
            (
                "fastgen_slots_busy",
                "Requests generating.",
                adm.active as f64,
            ),
            (
                "fastgen_slots",
                "Requests that may generate at once (--slots).",
                slots as f64,
            ),
        ];
        for (name, help, v) in gauges {
            head(&mut o, name, "gauge", help);
            let _ = writeln!(o, "{name} {v}");
        }
        head(
            &mut o,
            "fastgen_kv_pruned_ratio",
            "histogram",
            "Fraction of the full KV cache each request pruned.",
        );
        if let Ok(h) = self.pruned.lock() {
            for (&le, n) in PRUNED_BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(o, "fastgen_kv_pruned_ratio_bucket{{le=\"{le:.1}\"}} {n}");
            }
            let _ = writeln!(
                o,
                "fastgen_kv_pruned_ratio_bucket{{le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(o, "fastgen_kv_pruned_ratio_sum {}", h.sum);
            let _ = writeln!(o, "fastgen_kv_pruned_ratio_count {}", h.count);
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.count_request("/v1/chat/completions", 200);
        m.count_request("/v1/chat/completions", 200);
        m.count_request("other", 404);
        m.record_generation(10, 5, 40.0, 0.0);
        m.record_generation(10, 3, 20.0, 0.45);
        let text = m.render(
            Snapshot {
                active: 1,
                waiting: 2,
                reserved: 1000,
            },
            EngineGauges {
                kv_bytes_in_use: 1000,
                kept_conversations: 3,
                kept_bytes: 4096,
            },
            2,
            None,
        );
        for line in [
            "fastgen_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 2",
            "fastgen_requests_total{route=\"other\",status=\"404\"} 1",
            "fastgen_prompt_tokens_total 20",
            "fastgen_generated_tokens_total 8",
            "fastgen_decode_tokens_total 6",
            "fastgen_decode_seconds_total 0.06",
            "fastgen_decode_tokens_per_second 100",
            "fastgen_kv_bytes_in_use 1000",
            "fastgen_kept_conversations 3",
            "fastgen_kept_conversation_bytes 4096",
            "fastgen_queue_depth 2",
            "fastgen_slots_busy 1",
            "fastgen_kv_budget_bytes -1",
            "fastgen_kv_pruned_ratio_bucket{le=\"0.0\"} 1",
            "fastgen_kv_pruned_ratio_bucket{le=\"0.4\"} 1",
            "fastgen_kv_pruned_ratio_bucket{le=\"0.5\"} 2",
            "fastgen_kv_pruned_ratio_bucket{le=\"+Inf\"} 2",
            "fastgen_kv_pruned_ratio_count 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        // Every sample line belongs to a declared metric.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(text.contains(&format!("# TYPE {base} ")), "{l}");
        }
    }
}
