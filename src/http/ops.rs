//! Operations: liveness, readiness and metrics.

use crate::app::App;
use actix_web::{HttpResponse, get, web};
use serde_json::json;

/// The process is up.
#[utoipa::path(tag = "ops", responses((status = 200, description = "Alive")))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready to serve: the database and the shared state both answer.
#[utoipa::path(tag = "ops", responses(
    (status = 200, description = "Database and shared state reachable"),
    (status = 503, description = "A dependency is down; the body names it"),
))]
#[get("/readyz")]
pub async fn readyz(app: web::Data<App>) -> HttpResponse {
    let database = app.store.ping().await;
    let state = app.state.ping().await;
    let body = json!({
        "database": if database.is_ok() { "ok" } else { "unavailable" },
        "shared_state": if state.is_ok() { "ok" } else { "unavailable" },
    });
    if database.is_ok() && state.is_ok() {
        HttpResponse::Ok().json(body)
    } else {
        tracing::warn!(?database, ?state, "not ready");
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus text exposition.
#[utoipa::path(tag = "ops", responses((status = 200, description = "Prometheus metrics", content_type = "text/plain")))]
#[get("/metrics")]
pub async fn metrics(app: web::Data<App>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(app.metrics.render())
}
