//! The security team's API under `/admin/v1`. Every call passes [`gate`]: it authenticates the
//! admin token and, whatever the answer, records the call (who, what, when, status) before the
//! answer leaves. If that record cannot be written the caller gets `503`, never the answer.

use crate::access_log::query::{self, RawLogQuery};
use crate::access_log::{ChainedRecord, Cursor, LogFilter, VerifyReport};
use crate::admin::alerts::{self, AlertReport};
use crate::admin::auth;
use crate::admin::views::{GrantView, PartnerView, grant_views};
use crate::app::App;
use crate::domain::{ClientId, GrantId, UpstreamCustomerId};
use crate::error::{ApiError, Internal};
use crate::http::csv::CsvWriter;
use crate::oauth::grants;
use crate::store::{AdminAuditEntry, GrantFilter, GrantStatusFilter, PartnerStatus, RevokedBy};
use crate::unauthenticated::{self, Admission};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::{Error, HttpRequest, HttpResponse, ResponseError, get, post, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Rows fetched per database round trip while streaming CSV.
const CSV_PAGE: u64 = 1000;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin/v1")
            .wrap(actix_web::middleware::from_fn(gate))
            .service(access_log)
            .service(verify)
            .service(partners)
            .service(suspend)
            .service(reinstate)
            .service(list_grants)
            .service(revoke_grant)
            .service(alerts_report)
            .service(audit)
            .default_service(web::to(super::routes::unrouted)),
    );
}

/// Records the call, authenticates it, runs the handler, and sets the answer's status on the
/// record. The record is written before anything runs: if it cannot be, nothing runs and the
/// caller gets `503` — no admin action without its audit row.
pub async fn gate(
    req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let Some(app) = req.app_data::<web::Data<App>>().cloned() else {
        return Err(actix_web::error::ErrorInternalServerError(
            "no application state",
        ));
    };
    let identity = auth::authenticate(&app, super::bearer(req.headers())).await;
    let source = super::source::source_addr(&req);
    if identity.is_err() {
        // Refused calls spend their address's allowance first: past it, nothing is written.
        let limits = &app.settings.rate_limits;
        match unauthenticated::admit(&app.state, limits, source).await {
            Ok(Admission::Admitted) => {}
            Ok(Admission::Refused(refused)) => {
                app.metrics.observe_unauthenticated_refusal("admin");
                let response = ApiError::from(refused).error_response();
                return Ok(req.into_response(response).map_into_boxed_body());
            }
            Err(e) => {
                let refused = ApiError::Internal(Internal::from(e)).error_response();
                return Ok(req.into_response(refused).map_into_boxed_body());
            }
        }
    }
    let who = identity.as_ref().ok();
    let entry = AdminAuditEntry {
        token_id: who.map(|w| w.token_id.clone()),
        token_name: who.map(|w| w.name.clone()),
        ..super::middleware::audit_entry(req.request(), app.clock.now())
    };
    let audit_id = match app.store.insert_admin_audit(entry.clone()).await {
        Ok(id) => id,
        Err(e) => {
            let refused = ApiError::Internal(Internal::from(e)).error_response();
            return Ok(req.into_response(refused).map_into_boxed_body());
        }
    };
    let response = match identity {
        Ok(_) => next.call(req).await?.map_into_boxed_body(),
        Err(e) => {
            tracing::warn!(path = %entry.path, reason = %e, "admin call refused");
            req.into_response(e.error_response()).map_into_boxed_body()
        }
    };
    let status = response.status().as_u16();
    tracing::info!(admin = ?entry.token_name, method = %entry.method, path = %entry.path, status, "admin call");
    app.metrics.observe_admin_call(status);
    if let Err(e) = app.store.finish_admin_audit(audit_id, status).await {
        // The call is on record already; only its status is missing.
        tracing::error!(error = %e, audit_id, "recording an admin call's status failed");
    }
    Ok(response)
}

fn parse_query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))
}

/// Pages are fetched with one row more than `limit`: when it came, there is a next page, and
/// its cursor is that of the last row kept.
fn page<T>(rows: &mut Vec<T>, limit: u64, cursor: impl Fn(&T) -> String) -> Option<String> {
    if rows.len() as u64 <= limit {
        return None;
    }
    rows.truncate(limit as usize);
    rows.last().map(cursor)
}

fn bad(e: query::QueryError) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

#[derive(Serialize, ToSchema)]
pub struct LogPage {
    /// Access-log records, newest first.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<ChainedRecord>,
    pub next_cursor: Option<String>,
}

fn wants_csv(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().starts_with("text/csv")))
}

/// Search the access log: filters combine with AND; pages run newest first and stay stable
/// while records are appended. With `Accept: text/csv` the same query is streamed as CSV,
/// every matching record (from `cursor`, up to `limit` when given).
#[utoipa::path(
    get,
    path = "/admin/v1/access-log",
    tag = "admin",
    operation_id = "search_access_log",
    params(RawLogQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "A page of records (`application/json`, the default); with `Accept: text/csv`, every matching record from `cursor` on (up to `limit` when given), one row each, streamed", content(
            (LogPage = "application/json"),
            (String = "text/csv"),
        )),
        (status = 400, description = "A malformed filter, limit or cursor, or a parameter this operation does not take"),
    )
)]
#[get("/access-log")]
async fn access_log(app: web::Data<App>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let raw: RawLogQuery = parse_query(&req)?;
    let filter = LogFilter::parse(&raw).map_err(bad)?;
    app.access_log.settled().await;
    let before = raw
        .cursor
        .as_deref()
        .map(Cursor::decode)
        .transpose()
        .map_err(bad)?
        .map(|c| c.0);
    if wants_csv(&req) {
        // The same bound as a page: the document states one range for `limit`.
        if let Some(limit) = raw.limit {
            query::page_limit(Some(limit)).map_err(bad)?;
        }
        return Ok(csv_export(app.into_inner(), filter, before, raw.limit));
    }
    let limit = query::page_limit(raw.limit).map_err(bad)?;
    let mut items = app
        .store
        .search_access_log(&filter, before, limit + 1)
        .await?;
    let next_cursor = page(&mut items, limit, |r| Cursor(r.id).encode());
    Ok(HttpResponse::Ok().json(LogPage { items, next_cursor }))
}

/// Streams every record `filter` matches (below `before`, at most `limit`) as CSV, a page of
/// rows per database round trip; shared by the API and the console's "Export CSV".
pub(crate) fn csv_export(
    app: std::sync::Arc<App>,
    filter: LogFilter,
    before: Option<i64>,
    limit: Option<u64>,
) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"access-log.csv\"",
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(csv_stream(app, filter, before, limit))
}

const CSV_HEADER: [&str; 15] = [
    "id",
    "at",
    "request_id",
    "client_id",
    "grant_id",
    "customer_id",
    "resource",
    "resource_id",
    "record_ids",
    "fields",
    "outcome",
    "status",
    "client_ip",
    "prev_hash",
    "hash",
];

fn csv_rows(records: &[ChainedRecord], header: bool) -> Result<bytes::Bytes, csv::Error> {
    let mut out = CsvWriter::with_capacity(records.len() * 256);
    if header {
        out.row(CSV_HEADER)?;
    }
    for row in records {
        let r = &row.record;
        out.row([
            row.id.to_string().as_str(),
            &r.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            &r.request_id,
            r.client_id.as_deref().unwrap_or(""),
            r.grant_id.as_deref().unwrap_or(""),
            r.customer_id.as_deref().unwrap_or(""),
            &r.resource,
            r.resource_id.as_deref().unwrap_or(""),
            &r.record_ids.join(" "),
            &r.fields.join(" "),
            r.outcome.as_str(),
            &r.status.to_string(),
            r.client_ip.as_deref().unwrap_or(""),
            &row.prev_hash,
            &row.hash,
        ])?;
    }
    out.into_bytes().map(bytes::Bytes::from)
}

struct CsvState {
    app: std::sync::Arc<App>,
    filter: LogFilter,
    before: Option<i64>,
    remaining: Option<u64>,
    header: bool,
}

/// One page at a time: memory holds one page, however large the result.
fn csv_stream(
    app: std::sync::Arc<App>,
    filter: LogFilter,
    before: Option<i64>,
    limit: Option<u64>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, Error>> {
    let state = CsvState {
        app,
        filter,
        before,
        remaining: limit,
        header: true,
    };
    futures_util::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        let page = state.remaining.map_or(CSV_PAGE, |r| r.min(CSV_PAGE));
        let records = if page == 0 {
            Vec::new()
        } else {
            match state
                .app
                .store
                .search_access_log(&state.filter, state.before, page)
                .await
            {
                Ok(records) => records,
                Err(e) => {
                    // The status line is gone; aborting the body tells the client it is short.
                    tracing::error!(error = %e, "CSV export failed mid-stream");
                    return Some((
                        Err(actix_web::error::ErrorServiceUnavailable("export failed")),
                        None,
                    ));
                }
            }
        };
        let header = std::mem::take(&mut state.header);
        if records.is_empty() && !header {
            return None;
        }
        let chunk = csv_rows(&records, header)
            .map_err(|e| actix_web::error::ErrorInternalServerError(e.to_string()));
        let done = (records.len() as u64) < page;
        state.before = records.last().map(|r| r.id).or(state.before);
        state.remaining = state.remaining.map(|r| r - records.len() as u64);
        Some((chunk, if done { None } else { Some(state) }))
    })
}

/// Walk every chain (one per gateway instance) and every signed checkpoint; report each
/// chain's first broken link.
#[utoipa::path(
    get,
    path = "/admin/v1/access-log/verify",
    tag = "admin",
    operation_id = "verify_access_log",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "`{\"ok\": true, \"records\": N, \"unsigned_tail\": N, \"chains\": [{\"chain\": …, \"ok\": true, \"records\": N, \"signed_through\": seq, \"unsigned_tail\": N}]}` or `{\"ok\": false, \"records\": N, \"first_broken\": {\"id\": row or null, \"chain\": …, \"seq\": …, \"reason\": \"…\"}, \"chains\": […]}`", body = Object, content_type = "application/json"),
        (status = 401, description = "Missing, unknown or revoked admin token", content_type = "application/problem+json"),
    )
)]
#[get("/access-log/verify")]
async fn verify(app: web::Data<App>) -> Result<web::Json<VerifyReport>, ApiError> {
    Ok(web::Json(
        crate::access_log::latest::verify_log(&app).await?,
    ))
}

#[derive(Serialize, ToSchema)]
pub struct PartnerList {
    pub items: Vec<PartnerView>,
}

/// Every registered partner with its status.
#[utoipa::path(get, path = "/admin/v1/partners", tag = "admin", operation_id = "list_partners", security(("admin_token" = [])),
    responses((status = 200, body = PartnerList)))]
#[get("/partners")]
async fn partners(app: web::Data<App>) -> Result<web::Json<PartnerList>, ApiError> {
    let items = app
        .store
        .partners()
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(web::Json(PartnerList { items }))
}

async fn set_status(
    app: &App,
    client_id: &str,
    status: PartnerStatus,
) -> Result<web::Json<PartnerView>, ApiError> {
    let client = ClientId::parse(client_id).map_err(|_| ApiError::NotFound)?;
    if app.store.partner(&client).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    grants::set_partner_status(app, &client, status).await?;
    let partner = app
        .store
        .partner(&client)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(web::Json(partner.into()))
}

/// Suspend a partner: its next call on every instance is refused, with every grant and token
/// it holds; token requests and refreshes too. Idempotent.
#[utoipa::path(post, path = "/admin/v1/partners/{client_id}/suspend", tag = "admin", operation_id = "suspend_partner", security(("admin_token" = [])),
    params(("client_id" = String, Path)),
    responses((status = 200, body = PartnerView), (status = 404, description = "Unknown partner", content_type = "application/problem+json")))]
#[post("/partners/{client_id}/suspend")]
async fn suspend(
    app: web::Data<App>,
    path: web::Path<String>,
) -> Result<web::Json<PartnerView>, ApiError> {
    set_status(&app, &path, PartnerStatus::Suspended).await
}

/// Lift a suspension: the partner's unexpired grants work again. Idempotent.
#[utoipa::path(post, path = "/admin/v1/partners/{client_id}/reinstate", tag = "admin", operation_id = "reinstate_partner", security(("admin_token" = [])),
    params(("client_id" = String, Path)),
    responses((status = 200, body = PartnerView), (status = 404, description = "Unknown partner", content_type = "application/problem+json")))]
#[post("/partners/{client_id}/reinstate")]
async fn reinstate(
    app: web::Data<App>,
    path: web::Path<String>,
) -> Result<web::Json<PartnerView>, ApiError> {
    set_status(&app, &path, PartnerStatus::Active).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GrantQuery {
    #[param(
        pattern = "^([A-Za-z0-9_-][A-Za-z0-9._-]{0,63}|\\.[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}|\\.\\.[A-Za-z0-9._-]{1,62})$"
    )]
    pub client_id: Option<String>,
    /// The insurer's customer id, e.g. `CU-1001`.
    #[param(
        pattern = "^([A-Za-z0-9_-][A-Za-z0-9._-]{0,63}|\\.[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}|\\.\\.[A-Za-z0-9._-]{1,62})$"
    )]
    pub customer_id: Option<String>,
    #[param(pattern = "^(active|revoked|expired)$")]
    pub status: Option<String>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    #[param(
        pattern = "^[0-9]{1,11}\\.[0-9]{9}\\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )]
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct GrantPage {
    pub items: Vec<GrantView>,
    pub next_cursor: Option<String>,
}

/// `{seconds since the epoch}.{nanoseconds, 9 digits}.{grant id}`: the keyset compares the
/// stored time exactly, and the format fits a pattern the OpenAPI document can state.
fn grant_cursor(g: &crate::store::Grant) -> String {
    let at = g.created_at;
    format!(
        "{}.{:09}.{}",
        at.timestamp(),
        at.timestamp_subsec_nanos(),
        g.id
    )
}

pub(super) fn parse_grant_cursor(
    s: &str,
) -> Result<(chrono::DateTime<chrono::Utc>, GrantId), ApiError> {
    let invalid = || ApiError::BadRequest("`cursor`: is not a cursor this API issued".into());
    let mut parts = s.splitn(3, '.');
    let (Some(seconds), Some(nanos), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    let digits = |p: &str, most: usize| {
        (1..=most).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
    };
    // At most 11 digits of seconds: before year 5139, so never past the four-digit years that
    // stored times compare correctly with.
    if !digits(seconds, 11) || nanos.len() != 9 || !digits(nanos, 9) {
        return Err(invalid());
    }
    let at = chrono::DateTime::from_timestamp(
        seconds.parse().map_err(|_| invalid())?,
        nanos.parse().map_err(|_| invalid())?,
    )
    .ok_or_else(invalid)?;
    Ok((at, GrantId::parse(id).map_err(|_| invalid())?))
}

/// Grants, newest first, filtered by partner, customer and status.
#[utoipa::path(get, path = "/admin/v1/grants", tag = "admin", operation_id = "list_grants", security(("admin_token" = [])),
    params(GrantQuery),
    responses((status = 200, body = GrantPage), (status = 400, description = "A malformed filter, limit or cursor, or a parameter this operation does not take")))]
#[get("/grants")]
async fn list_grants(
    app: web::Data<App>,
    req: HttpRequest,
) -> Result<web::Json<GrantPage>, ApiError> {
    let q: GrantQuery = parse_query(&req)?;
    let limit = query::page_limit(q.limit).map_err(bad)?;
    let client_id = q
        .client_id
        .as_deref()
        .map(|c| {
            ClientId::parse(c)
                .map_err(|_| ApiError::BadRequest("`client_id`: is not a client id".into()))
        })
        .transpose()?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            GrantStatusFilter::parse(s).ok_or_else(|| {
                ApiError::BadRequest("`status`: must be active, revoked or expired".into())
            })
        })
        .transpose()?;
    let customer_id = match q.customer_id.as_deref() {
        None => None,
        Some(c) => {
            let upstream = UpstreamCustomerId::parse(c)
                .map_err(|_| ApiError::BadRequest("`customer_id`: is not a customer id".into()))?;
            match app.store.customer_by_upstream_id(&upstream).await? {
                Some(customer) => Some(customer.id),
                // No portal account: no grants.
                None => {
                    return Ok(web::Json(GrantPage {
                        items: Vec::new(),
                        next_cursor: None,
                    }));
                }
            }
        }
    };
    let after = q.cursor.as_deref().map(parse_grant_cursor).transpose()?;
    let filter = GrantFilter {
        client_id,
        customer_id,
        status,
    };
    let mut found = app
        .store
        .search_grants(&filter, app.clock.now(), after, limit + 1)
        .await?;
    let next_cursor = page(&mut found, limit, grant_cursor);
    let items = grant_views(&app, found).await?;
    Ok(web::Json(GrantPage { items, next_cursor }))
}

/// End a grant at once, on every instance, with its refresh tokens. Idempotent: revoking a
/// grant that already ended keeps its first reason.
#[utoipa::path(post, path = "/admin/v1/grants/{id}/revoke", tag = "admin", operation_id = "revoke_grant", security(("admin_token" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = GrantView), (status = 404, description = "Unknown grant", content_type = "application/problem+json")))]
#[post("/grants/{id}/revoke")]
async fn revoke_grant(
    app: web::Data<App>,
    path: web::Path<String>,
) -> Result<web::Json<GrantView>, ApiError> {
    let id = GrantId::parse(&path).map_err(|_| ApiError::NotFound)?;
    if app.store.grant(id).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    grants::revoke(&app, id, RevokedBy::SecurityTeam).await?;
    let grant = app.store.grant(id).await?.ok_or(ApiError::NotFound)?;
    let mut views = grant_views(&app, vec![grant]).await?;
    views.pop().map(web::Json).ok_or(ApiError::NotFound)
}

/// The anomaly report over the configured window; see `[alerts]` in the configuration.
#[utoipa::path(get, path = "/admin/v1/alerts", tag = "admin", operation_id = "alerts", security(("admin_token" = [])),
    responses((status = 200, body = AlertReport)))]
#[get("/alerts")]
async fn alerts_report(app: web::Data<App>) -> Result<web::Json<AlertReport>, ApiError> {
    // Like the search: the report covers every call this instance answered before it, which
    // with `durability = "journal"` may still be on its way from the journal to the database.
    app.access_log.settled().await;
    Ok(web::Json(alerts::evaluate(&app).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<AdminAuditEntry>,
    pub next_cursor: Option<String>,
}

/// The security team's own trail: every admin call, refused ones included, newest first.
#[utoipa::path(get, path = "/admin/v1/audit", tag = "admin", operation_id = "admin_audit", security(("admin_token" = [])),
    params(AuditQuery), responses(
        (status = 200, body = AuditPage),
        (status = 400, description = "A malformed limit or cursor, or a parameter this operation does not take"),
    ))]
#[get("/audit")]
async fn audit(app: web::Data<App>, req: HttpRequest) -> Result<web::Json<AuditPage>, ApiError> {
    let q: AuditQuery = parse_query(&req)?;
    let limit = query::page_limit(q.limit).map_err(bad)?;
    let before = q
        .cursor
        .as_deref()
        .map(Cursor::decode)
        .transpose()
        .map_err(bad)?
        .map(|c| c.0);
    let mut rows = app.store.admin_audit(before, limit + 1).await?;
    let next_cursor = page(&mut rows, limit, |(id, _)| Cursor(*id).encode());
    Ok(web::Json(AuditPage {
        items: rows.into_iter().map(|(_, e)| e).collect(),
        next_cursor,
    }))
}
