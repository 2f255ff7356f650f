//! The console's overview (`/console`): reads per partner over time, refusals by outcome, the
//! customers most partners read, the alerts firing now (each with a Suspend button), and the
//! chain's state.

use super::gate::Person;
use super::view::{self, PersonView};
use crate::access_log::latest;
use crate::admin::alerts;
use crate::app::App;
use crate::console::charts::{self, Chart, ChartError, Labels, NamedCounts};
use crate::domain::ClientId;
use crate::error::{Internal, PageError};
use crate::http::pages::{page, render};
use crate::store::{Bucket, SeriesName, TimeSeries};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, web};
use serde::Serialize;

/// A walk of the whole log older than this is redone in the background when someone looks.
const VERIFY_MAX_AGE_MINUTES: i64 = 10;

#[derive(Serialize)]
struct ChainView {
    chain: String,
    ok: bool,
    records: u64,
    signed_through: Option<i64>,
    unsigned_tail: u64,
}

#[derive(Serialize)]
struct ChainState {
    verified: bool,
    verified_at: Option<String>,
    verified_minutes_ago: Option<i64>,
    running: bool,
    ok: bool,
    records: u64,
    unsigned_tail: u64,
    first_broken: Option<String>,
    chains: Vec<ChainView>,
    last_checkpoint_at: Option<String>,
    last_checkpoint_minutes_ago: Option<i64>,
    import_lag: i64,
}

async fn chain_state(app: &web::Data<App>) -> Result<ChainState, Internal> {
    latest::refresh_if_stale(
        app.clone(),
        chrono::Duration::minutes(VERIFY_MAX_AGE_MINUTES),
    );
    let now = app.clock.now();
    let latest = app.latest_verification.get();
    let checkpoint = app.store.newest_checkpoint().await?;
    Ok(ChainState {
        verified: latest.is_some(),
        verified_at: latest.as_ref().map(|v| view::time(v.at)),
        verified_minutes_ago: latest.as_ref().map(|v| (now - v.at).num_minutes()),
        running: app.latest_verification.running(),
        ok: latest.as_ref().is_some_and(|v| v.report.ok),
        records: latest.as_ref().map_or(0, |v| v.report.records),
        unsigned_tail: latest.as_ref().map_or(0, |v| v.report.unsigned_tail),
        first_broken: latest
            .as_ref()
            .and_then(|v| v.report.first_broken.as_ref())
            .map(|b| format!("chain {} record {}: {}", b.chain, b.seq, b.reason)),
        chains: latest
            .map(|v| {
                v.report
                    .chains
                    .into_iter()
                    .map(|c| ChainView {
                        chain: c.chain,
                        ok: c.ok,
                        records: c.records,
                        signed_through: c.signed_through,
                        unsigned_tail: c.unsigned_tail,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        last_checkpoint_at: checkpoint.as_ref().map(|c| view::time(c.signed_at)),
        last_checkpoint_minutes_ago: checkpoint.map(|c| (now - c.signed_at).num_minutes()),
        import_lag: app.access_log.status().import_lag(),
    })
}

#[derive(Serialize)]
struct AlertView {
    rule: String,
    client_id: Option<String>,
    /// Whether the partner can still be suspended (it exists and is active).
    suspendable: bool,
    detail: String,
    value: u64,
    threshold: u64,
    auto_suspend: bool,
}

async fn alert_views(app: &App) -> Result<(Vec<AlertView>, String, String), Internal> {
    let report = alerts::evaluate(app).await?;
    let partners = app.store.partners().await?;
    let active = |client: &str| {
        partners.iter().any(|p| {
            p.client_id.as_str() == client && p.status == crate::store::PartnerStatus::Active
        })
    };
    let views = report
        .alerts
        .into_iter()
        .map(|a| AlertView {
            rule: serde_json::to_value(a.rule)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            suspendable: a.client_id.as_deref().is_some_and(active),
            client_id: a.client_id,
            detail: a.detail,
            value: a.value,
            threshold: a.threshold,
            auto_suspend: a.auto_suspend,
        })
        .collect();
    Ok((
        views,
        view::time(report.window_from),
        view::time(report.window_to),
    ))
}

#[get("")]
pub async fn show(app: web::Data<App>, person: Person) -> Result<HttpResponse, PageError> {
    // What this instance logged before the page was asked for is in the counts it shows.
    app.access_log.settled().await;
    let (alerts, window_from, window_to) = alert_views(&app).await?;
    let chain = chain_state(&app).await?;
    let charts = overview_charts(&app).await?;
    let body = render(
        "console/overview.html",
        minijinja::context! {
            person => PersonView::of(&person), alerts, window_from, window_to, chain, charts,
        },
    )?;
    Ok(page(StatusCode::OK, body, None))
}

/// A chart as a page embeds it: the SVG, and its text alternative as a table.
#[derive(Serialize)]
pub struct ChartView {
    pub id: String,
    pub svg: String,
    pub summary: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Partners drawn one by one in a chart; the rest are one "(other)" series.
const TOP_PARTNERS: usize = 8;
/// Customers in the "read by the most partners" ranking.
const TOP_CUSTOMERS: u64 = 10;

fn view(id: &str, chart: Result<Chart, ChartError>) -> Result<ChartView, Internal> {
    let chart = chart.map_err(|e| Internal::from(anyhow::anyhow!("chart {id}: {e}")))?;
    Ok(ChartView {
        id: id.to_owned(),
        svg: chart.svg,
        summary: chart.summary,
        columns: chart.table.columns,
        rows: chart.table.rows,
    })
}

fn time_chart(labels: &Labels, series: &TimeSeries) -> Result<ChartView, Internal> {
    // In name order ("(other)" last), not by volume: a partner keeps its colour from one chart
    // to the next whenever the same partners are drawn.
    let mut sorted: Vec<_> = series.series.iter().collect();
    sorted.sort_by_key(|s| (s.name == SeriesName::Other, s.name.to_string()));
    let named: Vec<NamedCounts> = sorted
        .into_iter()
        .map(|s| NamedCounts {
            name: s.name.to_string(),
            counts: s.counts.clone(),
        })
        .collect();
    view(
        labels.id,
        charts::stacked_bars(labels, &series.starts, &named),
    )
}

async fn overview_charts(app: &App) -> Result<Vec<ChartView>, Internal> {
    let now = app.clock.now();
    let day = now - chrono::Duration::hours(24);
    let month = now - chrono::Duration::days(30);
    let store = &app.store;
    let reads_day = store
        .reads_per_partner(Bucket::Hour, day, now, TOP_PARTNERS)
        .await?;
    let reads_month = store
        .reads_per_partner(Bucket::Day, month, now, TOP_PARTNERS)
        .await?;
    let refused_day = store.refusals_per_outcome(Bucket::Hour, day, now).await?;
    let refused_month = store.refusals_per_outcome(Bucket::Day, month, now).await?;
    let customers = store
        .top_customers_by_partners(month, TOP_CUSTOMERS)
        .await?;
    let bars: Vec<(String, u64)> = customers.into_iter().map(|r| (r.name, r.count)).collect();
    Ok(vec![
        time_chart(
            &Labels {
                id: "reads-24h",
                title: "Reads per partner, last 24 hours",
                x: "hour (UTC)",
                y: "reads per hour",
            },
            &reads_day,
        )?,
        time_chart(
            &Labels {
                id: "reads-30d",
                title: "Reads per partner, last 30 days",
                x: "day (UTC)",
                y: "reads per day",
            },
            &reads_month,
        )?,
        time_chart(
            &Labels {
                id: "refusals-24h",
                title: "Refused and failed calls by outcome, last 24 hours",
                x: "hour (UTC)",
                y: "calls per hour",
            },
            &refused_day,
        )?,
        time_chart(
            &Labels {
                id: "refusals-30d",
                title: "Refused and failed calls by outcome, last 30 days",
                x: "day (UTC)",
                y: "calls per day",
            },
            &refused_month,
        )?,
        view(
            "top-customers",
            charts::horizontal_bars(
                &Labels {
                    id: "top-customers",
                    title: "Customers read by the most partners, last 30 days",
                    x: "partners that read the customer's data",
                    y: "customer",
                },
                &bars,
            ),
        )?,
    ])
}

/// A partner's charts: reads per field and day, and its calls by outcome (30 days).
pub async fn partner_charts(app: &App, client: &ClientId) -> Result<Vec<ChartView>, Internal> {
    let now = app.clock.now();
    let month = now - chrono::Duration::days(30);
    let fields = app
        .store
        .reads_per_field(client.as_str(), month, now, TOP_PARTNERS)
        .await?;
    let outcomes: Vec<(String, u64)> = app
        .store
        .outcome_totals(client.as_str(), month, now)
        .await?
        .into_iter()
        .map(|(o, n)| (o.to_string(), n))
        .collect();
    Ok(vec![
        time_chart(
            &Labels {
                id: "fields-30d",
                title: "Reads per field, last 30 days",
                x: "day (UTC)",
                y: "field reads per day",
            },
            &fields,
        )?,
        view(
            "outcomes-30d",
            charts::horizontal_bars(
                &Labels {
                    id: "outcomes-30d",
                    title: "Calls by outcome, last 30 days",
                    x: "calls",
                    y: "outcome",
                },
                &outcomes,
            ),
        )?,
    ])
}
