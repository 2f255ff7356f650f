//! Operations: liveness, readiness and metrics.

use crate::admin::auth;
use crate::app::App;
use crate::error::{ApiError, Internal};
use crate::unauthenticated::{self, Admission};
use actix_web::{HttpRequest, HttpResponse, get, web};
use serde_json::json;

/// The process is up.
#[utoipa::path(tag = "ops", responses(
    (status = 200, description = "Alive: `{\"status\": \"ok\"}`", body = Object, content_type = "application/json"),
))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready to serve: the database and the shared state both answer.
#[utoipa::path(tag = "ops", responses(
    (status = 200, description = "Database, shared state and the access-log writer work: `{\"database\": \"ok\", \"shared_state\": \"ok\", \"access_log\": {…}}`", body = Object, content_type = "application/json"),
    (status = 503, description = "A dependency is down: the same body, naming it `unavailable` (or the log writer `failed`)", body = Object, content_type = "application/json"),
))]
#[get("/readyz")]
pub async fn readyz(app: web::Data<App>) -> HttpResponse {
    let database = app.store.ping().await;
    let state = app.state.ping().await;
    let log = app.access_log.status();
    let journal_ok = !log.broken.load(std::sync::atomic::Ordering::Acquire);
    let body = json!({
        "database": if database.is_ok() { "ok" } else { "unavailable" },
        "shared_state": if state.is_ok() { "ok" } else { "unavailable" },
        "access_log": {
            "durability": app.settings.access_log.durability,
            "chain": app.access_log.chain(),
            "writer": if journal_ok { "ok" } else { "failed" },
            "import_lag_records": log.import_lag(),
        },
    });
    if database.is_ok() && state.is_ok() && journal_ok {
        HttpResponse::Ok().json(body)
    } else {
        tracing::warn!(?database, ?state, "not ready");
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus text exposition. On this listener it needs an admin token: partner ids and
/// their outcomes are not for everyone. `metrics_listen` serves it without one, for a private
/// scrape network. Scrapes are not written to the admin audit (one every few seconds would
/// drown it); refused ones spend the caller's unauthenticated allowance.
#[utoipa::path(tag = "ops", security(("admin_token" = [])), responses(
    (status = 200, description = "Prometheus metrics", content_type = "text/plain"),
    (status = 401, description = "No valid admin token", content_type = "application/problem+json"),
    (status = 429, description = "Too many calls without a valid token from this address", content_type = "application/problem+json"),
))]
#[get("/metrics")]
pub async fn metrics(app: web::Data<App>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    if let Err(refused) = auth::authenticate(&app, super::bearer(req.headers())).await {
        let limits = &app.settings.rate_limits;
        let source = super::source::source_addr(&req);
        return match unauthenticated::admit(&app.state, limits, source)
            .await
            .map_err(Internal::from)?
        {
            Admission::Admitted => Err(refused),
            Admission::Refused(limited) => {
                app.metrics.observe_unauthenticated_refusal("metrics");
                Err(limited.into())
            }
        };
    }
    Ok(exposition(&app))
}

/// `/metrics` on the private `metrics_listen` listener: no token.
pub async fn metrics_open(app: web::Data<App>) -> HttpResponse {
    exposition(&app)
}

fn exposition(app: &App) -> HttpResponse {
    let mut text = app.metrics.render();
    crate::metrics::Metrics::render_access_log(&mut text, app.access_log.status(), &app.metrics);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text)
}
