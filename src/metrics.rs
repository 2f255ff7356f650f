//! Prometheus metrics, kept in process and rendered as text at `/metrics`.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// Latency buckets in seconds, from a cached partner call to a slow upstream.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    /// (route pattern, status) → latency histogram.
    http: Mutex<BTreeMap<(String, u16), Histogram>>,
}

impl Metrics {
    pub fn observe_http(&self, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut http = self.http.lock();
        let h = http.entry((route.to_owned(), status)).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP keyhole_http_request_duration_seconds HTTP requests by route and status."
        );
        let _ = writeln!(
            out,
            "# TYPE keyhole_http_request_duration_seconds histogram"
        );
        for ((route, status), h) in self.http.lock().iter() {
            let labels = format!("route=\"{}\",status=\"{status}\"", route.replace('"', "'"));
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "keyhole_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "keyhole_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "keyhole_http_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "keyhole_http_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cumulative_buckets() {
        let m = Metrics::default();
        m.observe_http("/oauth/token", 200, Duration::from_millis(3));
        m.observe_http("/oauth/token", 200, Duration::from_millis(30));
        let text = m.render();
        assert!(text.contains(
            "keyhole_http_request_duration_seconds_bucket{route=\"/oauth/token\",status=\"200\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "keyhole_http_request_duration_seconds_count{route=\"/oauth/token\",status=\"200\"} 2"
        ));
    }
}
