//! The console's overview (`/console`): reads per partner over time, refusals by outcome, the
//! customers most partners read, the alerts firing now (each with a Suspend button), and the
//! chain's state.

use super::gate::Person;
use super::view::{self, PersonView};
use crate::access_log::latest;
use crate::admin::alerts;
use crate::app::App;
use crate::domain::ClientId;
use crate::error::{Internal, PageError};
use crate::http::pages::{page, render};
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

async fn overview_charts(_app: &App) -> Result<Vec<ChartView>, Internal> {
    Ok(Vec::new())
}

/// A partner's charts: reads per field and per day.
pub async fn partner_charts(_app: &App, _client: &ClientId) -> Result<Vec<ChartView>, Internal> {
    Ok(Vec::new())
}
