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

impl Histogram {
    fn observe(&mut self, value: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if value <= *bound {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += value;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Default)]
struct LogStats {
    batches_ok: u64,
    batches_failed: u64,
    records: u64,
    commit_seconds: Histogram,
    /// Batch sizes, in the same buckets scaled by 10 000 (1 record = 0.0001).
    batch_sizes: [u64; 8],
}

const BATCH_SIZE_BOUNDS: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, 256];

/// resource → outcome → partner calls.
type CallsByResource = BTreeMap<String, BTreeMap<&'static str, u64>>;

#[derive(Default)]
pub struct Metrics {
    /// (route pattern, status) → latency histogram.
    http: Mutex<BTreeMap<(String, u16), Histogram>>,
    /// client_id → resource → outcome → calls: nested so that a steady caller's labels are
    /// found by reference, without building owned keys per call.
    partner_calls: Mutex<BTreeMap<String, CallsByResource>>,
    /// scope → values disclosed.
    fields: Mutex<BTreeMap<String, u64>>,
    log: Mutex<LogStats>,
    /// client_id → calls refused by a rate limit.
    rate_limited: Mutex<BTreeMap<String, u64>>,
    /// rule → alerts firing at the last background evaluation.
    alerts: Mutex<BTreeMap<String, u64>>,
    auto_suspensions: Mutex<u64>,
    /// status → admin API calls.
    admin_calls: Mutex<BTreeMap<u16, u64>>,
    /// surface → calls without a valid token refused by the per-address limit.
    unauthenticated_refusals: Mutex<BTreeMap<&'static str, u64>>,
    /// Bytes of torn journal tail cut at start (a crash mid-write).
    journal_torn_bytes: std::sync::atomic::AtomicU64,
}

impl Metrics {
    /// Labels are looked up by reference; a label is copied only the first time it is seen.
    pub fn observe_partner_call<'f>(
        &self,
        client_id: &str,
        resource: &str,
        outcome: &'static str,
        fields: impl IntoIterator<Item = &'f str>,
    ) {
        with_entry(&mut self.partner_calls.lock(), client_id, |resources| {
            with_entry(resources, resource, |outcomes| {
                *outcomes.entry(outcome).or_default() += 1;
            });
        });
        if outcome == "rate_limited" {
            with_entry(&mut self.rate_limited.lock(), client_id, |n| *n += 1);
        }
        let mut fields = fields.into_iter().peekable();
        if fields.peek().is_some() {
            let mut counts = self.fields.lock();
            for field in fields {
                with_entry(&mut counts, field, |n| *n += 1);
            }
        }
    }

    pub fn observe_journal_torn_tail(&self, bytes: u64) {
        self.journal_torn_bytes
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// The access log's import state, rendered with the rest: computed at scrape time from
    /// the writer's counters, never kept per call.
    pub fn render_access_log(
        out: &mut String,
        status: &crate::access_log::LogStatus,
        metrics: &Self,
    ) {
        use std::sync::atomic::Ordering;
        let lag = status.import_lag();
        let behind_for = if lag > 0 {
            let ms =
                chrono::Utc::now().timestamp_millis() - status.caught_up_at.load(Ordering::Acquire);
            ms.max(0) as f64 / 1000.0
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "# HELP keyhole_access_log_import_lag_records Records durable in the journal, not yet in the database."
        );
        let _ = writeln!(out, "# TYPE keyhole_access_log_import_lag_records gauge");
        let _ = writeln!(out, "keyhole_access_log_import_lag_records {lag}");
        let _ = writeln!(
            out,
            "# HELP keyhole_access_log_import_lag_seconds How long the database has been behind the journal."
        );
        let _ = writeln!(out, "# TYPE keyhole_access_log_import_lag_seconds gauge");
        let _ = writeln!(out, "keyhole_access_log_import_lag_seconds {behind_for}");
        let _ = writeln!(
            out,
            "# HELP keyhole_access_log_durable_seq The last record of this instance's chain that is durable."
        );
        let _ = writeln!(out, "# TYPE keyhole_access_log_durable_seq gauge");
        let _ = writeln!(
            out,
            "keyhole_access_log_durable_seq {}",
            status.durable.load(Ordering::Acquire)
        );
        let _ = writeln!(
            out,
            "# HELP keyhole_access_log_journal_failed 1 once the journal failed to write or sync (every call then gets 503)."
        );
        let _ = writeln!(out, "# TYPE keyhole_access_log_journal_failed gauge");
        let _ = writeln!(
            out,
            "keyhole_access_log_journal_failed {}",
            u8::from(status.broken.load(Ordering::Acquire))
        );
        let _ = writeln!(
            out,
            "# HELP keyhole_access_log_journal_torn_bytes_total Bytes of torn journal tail cut at start."
        );
        let _ = writeln!(
            out,
            "# TYPE keyhole_access_log_journal_torn_bytes_total counter"
        );
        let _ = writeln!(
            out,
            "keyhole_access_log_journal_torn_bytes_total {}",
            metrics.journal_torn_bytes.load(Ordering::Relaxed)
        );
    }

    pub fn observe_log_batch(&self, records: usize, elapsed: Duration, ok: bool) {
        let mut log = self.log.lock();
        if ok {
            log.batches_ok += 1;
            log.records += records as u64;
        } else {
            log.batches_failed += 1;
        }
        log.commit_seconds.observe(elapsed.as_secs_f64());
        for (i, bound) in BATCH_SIZE_BOUNDS.iter().enumerate() {
            if records <= *bound {
                log.batch_sizes[i] += 1;
            }
        }
    }

    pub fn observe_alerts(&self, alerts: &[crate::admin::alerts::Alert]) {
        let mut firing = self.alerts.lock();
        for n in firing.values_mut() {
            *n = 0;
        }
        for alert in alerts {
            let rule = serde_json::to_value(alert.rule)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            *firing.entry(rule).or_default() += 1;
        }
    }

    pub fn observe_auto_suspension(&self) {
        *self.auto_suspensions.lock() += 1;
    }

    /// `surface` is a fixed name (`partner`, `admin`, `metrics`), never caller input.
    pub fn observe_unauthenticated_refusal(&self, surface: &'static str) {
        *self
            .unauthenticated_refusals
            .lock()
            .entry(surface)
            .or_default() += 1;
    }

    pub fn observe_admin_call(&self, status: u16) {
        *self.admin_calls.lock().entry(status).or_default() += 1;
    }

    pub fn observe_http(&self, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut http = self.http.lock();
        http.entry((route.to_owned(), status))
            .or_default()
            .observe(secs);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let name = "keyhole_http_request_duration_seconds";
        let _ = writeln!(out, "# HELP {name} HTTP requests by route and status.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for ((route, status), h) in self.http.lock().iter() {
            let labels = format!("route=\"{}\",status=\"{status}\"", escape(route));
            h.render(&mut out, name, &labels);
        }
        let _ = writeln!(
            out,
            "# HELP keyhole_partner_requests_total Partner API calls by partner, resource and outcome."
        );
        let _ = writeln!(out, "# TYPE keyhole_partner_requests_total counter");
        for (client, resources) in self.partner_calls.lock().iter() {
            for (resource, outcomes) in resources {
                for (outcome, n) in outcomes {
                    let _ = writeln!(
                        out,
                        "keyhole_partner_requests_total{{client_id=\"{}\",resource=\"{}\",outcome=\"{outcome}\"}} {n}",
                        escape(client),
                        escape(resource)
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP keyhole_fields_returned_total Field values disclosed to partners, by field."
        );
        let _ = writeln!(out, "# TYPE keyhole_fields_returned_total counter");
        for (field, n) in self.fields.lock().iter() {
            let _ = writeln!(
                out,
                "keyhole_fields_returned_total{{field=\"{}\"}} {n}",
                escape(field)
            );
        }
        let log = self.log.lock();
        let _ = writeln!(out, "# TYPE keyhole_access_log_batches_total counter");
        let _ = writeln!(
            out,
            "keyhole_access_log_batches_total{{result=\"ok\"}} {}",
            log.batches_ok
        );
        let _ = writeln!(
            out,
            "keyhole_access_log_batches_total{{result=\"failed\"}} {}",
            log.batches_failed
        );
        let _ = writeln!(out, "# TYPE keyhole_access_log_records_total counter");
        let _ = writeln!(out, "keyhole_access_log_records_total {}", log.records);
        let _ = writeln!(
            out,
            "# HELP keyhole_access_log_batch_size Records per group commit."
        );
        let _ = writeln!(out, "# TYPE keyhole_access_log_batch_size histogram");
        for (i, bound) in BATCH_SIZE_BOUNDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "keyhole_access_log_batch_size_bucket{{le=\"{bound}\"}} {}",
                log.batch_sizes[i]
            );
        }
        let total = log.batches_ok + log.batches_failed;
        let _ = writeln!(
            out,
            "keyhole_access_log_batch_size_bucket{{le=\"+Inf\"}} {total}"
        );
        let _ = writeln!(out, "keyhole_access_log_batch_size_count {total}");
        let _ = writeln!(
            out,
            "# HELP keyhole_access_log_commit_seconds Group commit latency."
        );
        let _ = writeln!(out, "# TYPE keyhole_access_log_commit_seconds histogram");
        log.commit_seconds
            .render(&mut out, "keyhole_access_log_commit_seconds", "");
        drop(log);
        let _ = writeln!(
            out,
            "# HELP keyhole_rate_limit_refusals_total Partner calls refused by a rate limit."
        );
        let _ = writeln!(out, "# TYPE keyhole_rate_limit_refusals_total counter");
        for (client, n) in self.rate_limited.lock().iter() {
            let _ = writeln!(
                out,
                "keyhole_rate_limit_refusals_total{{client_id=\"{}\"}} {n}",
                escape(client)
            );
        }
        let _ = writeln!(
            out,
            "# HELP keyhole_alerts_firing Alerts at the last background evaluation, by rule."
        );
        let _ = writeln!(out, "# TYPE keyhole_alerts_firing gauge");
        for (rule, n) in self.alerts.lock().iter() {
            let _ = writeln!(out, "keyhole_alerts_firing{{rule=\"{rule}\"}} {n}");
        }
        let _ = writeln!(out, "# TYPE keyhole_partner_auto_suspensions_total counter");
        let _ = writeln!(
            out,
            "keyhole_partner_auto_suspensions_total {}",
            self.auto_suspensions.lock()
        );
        let _ = writeln!(
            out,
            "# HELP keyhole_admin_requests_total Security team API calls by status."
        );
        let _ = writeln!(out, "# TYPE keyhole_admin_requests_total counter");
        for (status, n) in self.admin_calls.lock().iter() {
            let _ = writeln!(
                out,
                "keyhole_admin_requests_total{{status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP keyhole_unauthenticated_refusals_total Calls without a valid token refused by the per-address limit (not logged one by one)."
        );
        let _ = writeln!(out, "# TYPE keyhole_unauthenticated_refusals_total counter");
        for (surface, n) in self.unauthenticated_refusals.lock().iter() {
            let _ = writeln!(
                out,
                "keyhole_unauthenticated_refusals_total{{surface=\"{surface}\"}} {n}"
            );
        }
        out
    }
}

/// Updates the value under `key`, found by reference; the key is copied only when absent.
fn with_entry<V: Default>(map: &mut BTreeMap<String, V>, key: &str, update: impl FnOnce(&mut V)) {
    match map.get_mut(key) {
        Some(value) => update(value),
        None => {
            let mut value = V::default();
            update(&mut value);
            map.insert(key.to_owned(), value);
        }
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partner_calls_render_in_label_order_with_fields_and_refusals() {
        let m = Metrics::default();
        m.observe_partner_call("p-b", "claims", "ok", ["claims:status"]);
        m.observe_partner_call("p-a", "other", "not_found", []);
        m.observe_partner_call("p-a", "claims", "rate_limited", []);
        m.observe_partner_call(
            "p-a",
            "claims",
            "ok",
            ["claims:status", "claims:repair_stage"],
        );
        m.observe_partner_call("p-a", "claims", "ok", ["claims:status"]);
        let text = m.render();
        let calls: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("keyhole_partner_requests_total{"))
            .collect();
        assert_eq!(
            calls,
            [
                r#"keyhole_partner_requests_total{client_id="p-a",resource="claims",outcome="ok"} 2"#,
                r#"keyhole_partner_requests_total{client_id="p-a",resource="claims",outcome="rate_limited"} 1"#,
                r#"keyhole_partner_requests_total{client_id="p-a",resource="other",outcome="not_found"} 1"#,
                r#"keyhole_partner_requests_total{client_id="p-b",resource="claims",outcome="ok"} 1"#,
            ]
        );
        assert!(text.contains("keyhole_fields_returned_total{field=\"claims:status\"} 3"));
        assert!(text.contains("keyhole_fields_returned_total{field=\"claims:repair_stage\"} 1"));
        assert!(text.contains("keyhole_rate_limit_refusals_total{client_id=\"p-a\"} 1"));
    }

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
