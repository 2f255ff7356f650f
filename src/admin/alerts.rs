//! The anomaly report: rules a security team wants, computed per partner from the access log
//! over a recent window, with thresholds from `[alerts]`. A rule marked `suspend` also
//! contains the partner at once: the background evaluation suspends it on every instance.

use crate::access_log::Outcome;
use crate::app::App;
use crate::config::{AlertRule, AlertSettings};
use crate::domain::ClientId;
use crate::error::Internal;
use crate::oauth::grants;
use crate::store::{Bucket, PerPartner};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Many distinct customers read in the window: harvesting rather than serving customers.
    DistinctCustomers,
    /// A spike of refused calls: probing ids, or a stolen or broken token.
    RefusedCalls,
    /// Calls for records or fields the partner's grants do not cover.
    BeyondGrants,
    /// Reads at hours the partner normally does not work.
    UnusualHours,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Alert {
    pub rule: Rule,
    /// The partner; null for calls whose token named none (garbage or forged tokens).
    pub client_id: Option<String>,
    pub value: u64,
    pub threshold: u64,
    pub detail: String,
    /// Whether this rule suspends the partner automatically.
    pub auto_suspend: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertReport {
    pub window_from: DateTime<Utc>,
    pub window_to: DateTime<Utc>,
    pub alerts: Vec<Alert>,
}

const REFUSED: [Outcome; 3] = [Outcome::NotFound, Outcome::Denied, Outcome::InvalidToken];

fn over_threshold(
    rule: Rule,
    config: AlertRule,
    counts: PerPartner,
    describe: impl Fn(u64) -> String,
) -> impl Iterator<Item = Alert> {
    counts
        .into_iter()
        .filter(move |(_, n)| *n >= config.threshold)
        .map(move |(client_id, value)| Alert {
            rule,
            detail: describe(value),
            client_id,
            value,
            threshold: config.threshold,
            auto_suspend: config.suspend,
        })
}

/// Hours of the day in which the partner made less than `share` of its baseline reads.
fn unusual_hours(baseline: &[u64; 24], share: f64) -> [bool; 24] {
    let total: u64 = baseline.iter().sum();
    let mut unusual = [false; 24];
    for (hour, reads) in baseline.iter().enumerate() {
        unusual[hour] = (*reads as f64) < share * total as f64;
    }
    unusual
}

/// Reads per partner and UTC hour of day over the baseline.
pub type Baseline = std::collections::HashMap<String, [u64; 24]>;

/// The baseline of the hour it ends at. Its edges are whole hours, so it changes once an hour
/// (half a second of grouping at 10 million records): computed once per hour, not per look at
/// the console. Records imported late into an hour already past reach it the next hour.
#[derive(Debug, Default)]
pub struct BaselineCache(parking_lot::Mutex<Option<(DateTime<Utc>, std::sync::Arc<Baseline>)>>);

impl BaselineCache {
    fn get(&self, until: DateTime<Utc>) -> Option<std::sync::Arc<Baseline>> {
        match &*self.0.lock() {
            Some((at, baseline)) if *at == until => Some(baseline.clone()),
            _ => None,
        }
    }

    fn put(&self, until: DateTime<Utc>, baseline: std::sync::Arc<Baseline>) {
        *self.0.lock() = Some((until, baseline));
    }
}

pub async fn evaluate(app: &App) -> Result<AlertReport, Internal> {
    let config: &AlertSettings = &app.settings.alerts;
    let now = app.clock.now();
    let since = now - chrono::Duration::minutes(i64::from(config.window_minutes));
    let store = &app.store;
    let mut alerts = Vec::new();
    if let Some(window) = store.log_window(since, None).await? {
        alerts.extend(over_threshold(
            Rule::DistinctCustomers,
            config.distinct_customers,
            store.customers_read_by_partner(&window).await?,
            |n| format!("read data of {n} distinct customers in the window"),
        ));
        alerts.extend(over_threshold(
            Rule::RefusedCalls,
            config.refused_calls,
            store.calls_by_partner(&window, &REFUSED).await?,
            |n| format!("{n} calls refused as not_found, denied or invalid_token"),
        ));
        alerts.extend(over_threshold(
            Rule::BeyondGrants,
            config.beyond_grants,
            store.calls_by_partner(&window, &[Outcome::Denied]).await?,
            |n| format!("{n} calls for records or fields beyond its grants"),
        ));
        // The baseline is read from the hourly totals, not the log (1.2 s at 10 million
        // records for four weeks of it), so its edges are whole hours: the `baseline_days` of
        // hours before the one that holds `since`. It ends up to an hour before the window
        // starts, so it never counts the window's own reads, and it is just as long.
        let baseline_until = Bucket::Hour.start(since);
        let baseline_from =
            baseline_until - chrono::Duration::days(i64::from(config.baseline_days));
        let baseline = match app.alert_baseline.get(baseline_until) {
            Some(cached) => cached,
            None => {
                let fresh = std::sync::Arc::new(
                    store
                        .reads_by_partner_and_hour_of_day(baseline_from, baseline_until)
                        .await?,
                );
                app.alert_baseline.put(baseline_until, fresh.clone());
                fresh
            }
        };
        let recent = store.reads_by_partner_and_hour(&window).await?;
        alerts.extend(unusual_hour_alerts(config, &baseline, recent));
    }
    alerts.sort_by(|a, b| (&a.client_id, a.rule as u8).cmp(&(&b.client_id, b.rule as u8)));
    Ok(AlertReport {
        window_from: since,
        window_to: now,
        alerts,
    })
}

fn unusual_hour_alerts(
    config: &AlertSettings,
    baseline: &std::collections::HashMap<String, [u64; 24]>,
    recent: std::collections::HashMap<String, [u64; 24]>,
) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for (client, hours) in recent {
        let Some(usual) = baseline.get(&client) else {
            continue;
        };
        if usual.iter().sum::<u64>() < config.baseline_min_reads {
            continue;
        }
        let unusual = unusual_hours(usual, config.unusual_hour_share);
        let odd: Vec<usize> = (0..24).filter(|h| unusual[*h] && hours[*h] > 0).collect();
        let value: u64 = odd.iter().map(|h| hours[*h]).sum();
        if value >= config.unusual_hours.threshold {
            alerts.push(Alert {
                rule: Rule::UnusualHours,
                detail: format!(
                    "{value} reads at hours (UTC) {odd:?}, where it made under {:.1}% of its reads over {} days",
                    config.unusual_hour_share * 100.0,
                    config.baseline_days
                ),
                client_id: Some(client),
                value,
                threshold: config.unusual_hours.threshold,
                auto_suspend: config.unusual_hours.suspend,
            });
        }
    }
    alerts
}

/// Suspends every active partner that an auto-suspending rule fired for; returns them.
pub async fn contain(app: &App, report: &AlertReport) -> Result<Vec<ClientId>, Internal> {
    let mut suspended = Vec::new();
    for alert in report.alerts.iter().filter(|a| a.auto_suspend) {
        let Some(client) = alert
            .client_id
            .as_deref()
            .and_then(|c| ClientId::parse(c).ok())
        else {
            continue;
        };
        if suspended.contains(&client) {
            continue;
        }
        // A partner the security team reinstated inside this window was looked at by a
        // person: the same calls must not suspend it again.
        if !grants::suspend_unless_changed(app, &client, report.window_from).await? {
            continue;
        }
        tracing::warn!(client_id = %client, rule = ?alert.rule, value = alert.value, "partner suspended automatically");
        app.metrics.observe_auto_suspension();
        suspended.push(client);
    }
    Ok(suspended)
}

/// Whether any rule contains partners automatically; only then does the background run.
pub fn any_containment(config: &AlertSettings) -> bool {
    [
        config.distinct_customers,
        config.refused_calls,
        config.beyond_grants,
        config.unusual_hours,
    ]
    .iter()
    .any(|r| r.suspend)
}

/// Evaluates the rules every `evaluate_every_seconds` and applies containment.
pub async fn run(app: actix_web::web::Data<App>) {
    let every = Duration::from_secs(u64::from(app.settings.alerts.evaluate_every_seconds));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = match evaluate(&app).await {
            Ok(report) => {
                app.metrics.observe_alerts(&report.alerts);
                contain(&app, &report).await.map(|_| ())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "evaluating alert rules failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_is_unusual_below_its_share_of_the_baseline() {
        let mut baseline = [0u64; 24];
        baseline[8..18].fill(100);
        baseline[3] = 5;
        let unusual = unusual_hours(&baseline, 0.01);
        assert!(unusual[3], "5 of 1005 is under 1%");
        assert!(unusual[22]);
        assert!(!unusual[9]);
    }
}
