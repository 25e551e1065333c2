//! Prometheus text-format metrics, kept with atomics and small maps (no metrics framework).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use b3iq_runtime::runtime::RuntimeMetrics;

/// A fixed-bucket histogram.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// A histogram with the given upper bounds (ascending; `+Inf` is implicit).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Record one value.
    pub fn observe(&self, v: f64) {
        if !v.is_finite() || v < 0.0 {
            return;
        }
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add((v * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in self.bounds.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let c = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {c}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {c}");
    }
}

const TTFT_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const TPS_BOUNDS: &[f64] = &[
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0,
];

/// All host metrics.
#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    prompt_tokens: Mutex<BTreeMap<String, u64>>,
    completion_tokens: Mutex<BTreeMap<String, u64>>,
    /// Time to first token, seconds.
    pub ttft: Histogram,
    /// Generation speed per request, tokens/s.
    pub tokens_per_second: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::default(),
            prompt_tokens: Mutex::default(),
            completion_tokens: Mutex::default(),
            ttft: Histogram::new(TTFT_BOUNDS),
            tokens_per_second: Histogram::new(TPS_BOUNDS),
        }
    }
}

fn bump(m: &Mutex<BTreeMap<String, u64>>, k: &str, n: u64) {
    let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
    *g.entry(k.to_string()).or_default() += n;
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Count a finished HTTP request by route template and status.
    pub fn request(&self, route: &str, status: u16) {
        let mut g = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *g.entry((route.to_string(), status)).or_default() += 1;
    }

    /// Count tokens of a completed generation.
    pub fn tokens(&self, model: &str, prompt: u64, completion: u64) {
        bump(&self.prompt_tokens, model, prompt);
        bump(&self.completion_tokens, model, completion);
    }

    /// Render everything in Prometheus text format 0.0.4.
    pub fn render(&self, rt: Option<RuntimeMetrics>, receipts_stored: i64) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP b3iq_up 1 while the host is serving.\n# TYPE b3iq_up gauge\nb3iq_up 1\n",
        );
        out.push_str("# HELP b3iq_http_requests_total HTTP requests by route and status.\n# TYPE b3iq_http_requests_total counter\n");
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "b3iq_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        for (name, help, m) in [
            (
                "b3iq_prompt_tokens_total",
                "Prompt tokens processed, by model.",
                &self.prompt_tokens,
            ),
            (
                "b3iq_completion_tokens_total",
                "Completion tokens generated, by model.",
                &self.completion_tokens,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (model, n) in m.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {n}", escape(model));
            }
        }
        self.ttft.render(
            &mut out,
            "b3iq_ttft_seconds",
            "Time to first token, seconds.",
        );
        self.tokens_per_second.render(
            &mut out,
            "b3iq_generation_tokens_per_second",
            "Generation speed per request after the first token.",
        );
        let rt = rt.unwrap_or_default();
        for (name, help, v) in [
            (
                "b3iq_queue_depth",
                "Requests waiting for a decode slot.",
                rt.queue_depth as u64,
            ),
            (
                "b3iq_queue_capacity",
                "Most requests that may wait before 429.",
                rt.queue_capacity as u64,
            ),
            (
                "b3iq_active_sequences",
                "Sequences decoding now.",
                rt.active_sequences as u64,
            ),
            (
                "b3iq_max_sequences",
                "Most sequences decoded together.",
                rt.max_sequences as u64,
            ),
            (
                "b3iq_receipts_stored",
                "Signed receipts in state.db.",
                receipts_stored.max(0) as u64,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP b3iq_runtime_rejected_total Requests refused because the queue was full.\n# TYPE b3iq_runtime_rejected_total counter\nb3iq_runtime_rejected_total {}",
            rt.requests_rejected_total
        );
        for (name, help, v) in [
            (
                "b3iq_prompt_tokens_cached_total",
                "Prompt tokens read from the prompt cache instead of computed again.",
                rt.prompt_tokens_cached_total,
            ),
            (
                "b3iq_kv_cache_full_retries_total",
                "Decodes refused by a full KV cache (each retried with a smaller batch).",
                rt.kv_cache_full_retries_total,
            ),
            (
                "b3iq_kv_cache_full_evictions_total",
                "Requests ended to make room in a full KV cache.",
                rt.kv_cache_full_evictions_total,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.request("/v1/chat/completions", 200);
        m.request("/v1/chat/completions", 200);
        m.request("/v1/chat/completions", 429);
        m.tokens("m\"x", 10, 5);
        m.ttft.observe(0.02);
        m.ttft.observe(3.0);
        let t = m.render(
            Some(RuntimeMetrics {
                queue_depth: 2,
                active_sequences: 3,
                prompt_tokens_cached_total: 170,
                kv_cache_full_evictions_total: 1,
                ..Default::default()
            }),
            7,
        );
        assert!(
            t.contains("b3iq_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 2"),
            "{t}"
        );
        assert!(t.contains("status=\"429\"} 1"));
        assert!(t.contains("b3iq_prompt_tokens_total{model=\"m\\\"x\"} 10"));
        assert!(t.contains("b3iq_ttft_seconds_bucket{le=\"0.025\"} 1"));
        assert!(t.contains("b3iq_ttft_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(t.contains("b3iq_ttft_seconds_count 2"));
        assert!(t.contains("b3iq_queue_depth 2"));
        assert!(t.contains("b3iq_active_sequences 3"));
        assert!(t.contains("# TYPE b3iq_prompt_tokens_cached_total counter\nb3iq_prompt_tokens_cached_total 170\n"), "{t}");
        assert!(t.contains("b3iq_kv_cache_full_retries_total 0\n"));
        assert!(t.contains("b3iq_kv_cache_full_evictions_total 1\n"));
        assert!(t.contains("b3iq_receipts_stored 7"));
    }
}
