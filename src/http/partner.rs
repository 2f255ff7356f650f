//! The partner API: `GET /partner/v1/{resource}` and `GET /partner/v1/{resource}/{id}`.
//! The handler takes the request apart, lets `proxy` decide, commits the access-log record,
//! and only then answers.

use crate::app::App;
use crate::dpop::DpopError;
use crate::error::ApiError;
use crate::http::middleware::RequestId;
use crate::proxy::{self, Answer, CallRequest, ProxyError};
use crate::upstream::UpstreamClient;
use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError, web};

/// The headers a 200 and a 304 share: the ETag, revalidation, and the rate-limit state.
fn with_validators(
    mut response: actix_web::HttpResponseBuilder,
    etag: String,
    rate: proxy::RateHeaders,
) -> actix_web::HttpResponseBuilder {
    response
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "private, no-cache"))
        .insert_header(("RateLimit-Policy", policy_value(rate.policy)))
        .insert_header(("RateLimit", rate.current));
    response
}

/// The partner's `RateLimit-Policy`, made once: shared, not copied (the bytes are checked
/// once more here, which is cheap; a value that fails would be our own bug).
fn policy_value(policy: bytes::Bytes) -> header::HeaderValue {
    header::HeaderValue::from_maybe_shared(policy)
        .unwrap_or_else(|_| header::HeaderValue::from_static(""))
}

async fn serve(
    app: &App,
    upstream: &UpstreamClient,
    req: &HttpRequest,
    resource: &str,
    id: Option<&str>,
) -> HttpResponse {
    let token = super::access_token(req.headers());
    let dpop_scheme = matches!(token, Some((_, proxy::Scheme::Dpop)));
    let call = CallRequest {
        token,
        proof: super::dpop_proof(req.headers()),
        path: req.path(),
        resource,
        id,
        if_none_match: req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok()),
        request_id: req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
        source: super::source::source_addr(req),
    };
    let proxy::Call {
        result,
        record,
        labels,
    } = proxy::handle(app, upstream, call).await;
    let mut response = match result {
        Ok(Answer::Data { body, etag, rate }) => with_validators(HttpResponse::Ok(), etag, rate)
            .content_type("application/json")
            .body(body),
        Ok(Answer::NotModified { etag, rate }) => {
            with_validators(HttpResponse::NotModified(), etag, rate).finish()
        }
        Err(ProxyError::Dpop(DpopError::UseNonce)) => ApiError::UseDpopNonce {
            nonce: app.dpop.nonce(app.clock.now()),
        }
        .error_response(),
        // RFC 9449 §7.1: a token refused as sent with the DPoP scheme is challenged with it.
        Err(e @ ProxyError::InvalidToken(_)) if dpop_scheme => {
            let mut refused = ApiError::from(e).error_response();
            refused.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(
                    "DPoP error=\"invalid_token\", algs=\"ES256 EdDSA PS256\"",
                ),
            );
            refused
        }
        Err(e) => ApiError::from(e).error_response(),
    };
    if app.dpop.requires_nonce()
        && (response.status().is_success()
            || response.status() == actix_web::http::StatusCode::NOT_MODIFIED)
    {
        // RFC 9449 §9: the next nonce travels with every answer, so a partner never needs a
        // refused call to learn it.
        if let Ok(nonce) = header::HeaderValue::from_str(&app.dpop.nonce(app.clock.now())) {
            response
                .headers_mut()
                .insert(header::HeaderName::from_static("dpop-nonce"), nonce);
        }
    }
    // No record: refused before it could write one (a flood of calls without a valid token).
    let Some(mut record) = record else {
        return response;
    };
    record.status = response.status().as_u16();
    let outcome = record.outcome.as_str();
    // No answer leaves before its record is durable; without the log there is no answer.
    if let Err(e) = app.access_log.append(record).await {
        tracing::error!(error = %e, "access log unavailable; refusing the call");
        response = ApiError::from(ProxyError::LogUnavailable).error_response();
    } else {
        // Metric labels only from bounded sets: a path segment the caller made up is `other`.
        let client = labels.claims.as_ref().map_or("", |c| c.client_id.as_str());
        let resource = labels.resource.map_or("other", |r| r.name.as_str());
        let fields = labels.disclosed.iter().map(|f| f.scope_name.as_str());
        app.metrics
            .observe_partner_call(client, resource, outcome, fields);
    }
    response
}

/// Every request under `/partner/v1/`: split by hand rather than by the router's regex
/// matching, which showed up in profiles of this, the hottest path. Segments are taken raw
/// (still percent-encoded), so an encoded slash or dot can never pass the id check.
pub async fn dispatch(
    app: web::Data<App>,
    upstream: web::Data<UpstreamClient>,
    req: HttpRequest,
) -> HttpResponse {
    if req.method() != actix_web::http::Method::GET {
        // `405` for a record or list path, `404` for what is neither.
        return super::routes::refusal(&req);
    }
    let rest = req.path().strip_prefix(PREFIX).unwrap_or_default();
    let mut segments = rest.splitn(2, '/');
    let resource = segments.next().unwrap_or_default();
    let id = segments.next();
    serve(&app, &upstream, &req, resource, id).await
}

pub const PREFIX: &str = "/partner/v1/";

/// One record as a partner sees it: its `id` and the fields the grant allows (which fields,
/// the grant decides; nothing else of the claims service's record ever comes through).
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"id": "C-1001", "status": "in_repair"}))]
#[allow(dead_code)] // Only the document's schema: the body is made by `proxy::projection`.
pub struct Record {
    pub id: String,
}

/// The grant owner's records of a resource.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct RecordPage {
    pub items: Vec<Record>,
}

/// The grant owner's records of `resource`, each reduced to `id` plus the granted fields.
#[utoipa::path(
    get,
    path = "/partner/v1/{resource}",
    tag = "partner",
    operation_id = "list_records",
    params(
        ("resource" = String, Path, description = "A resource of the catalog, e.g. `claims`"),
        ("DPoP" = Option<String>, Header, description = "RFC 9449 proof for this request (htm GET, htu this URL, ath): required with `Authorization: DPoP <token>` for a DPoP-bound token"),
    ),
    security(("partner_token" = [])),
    responses(
        (status = 200, description = "The records, with `ETag`, `RateLimit-Policy` and `RateLimit`", body = RecordPage),
        (status = 304, description = "Not modified (If-None-Match matched the ETag)"),
        (status = 401, description = "Missing, invalid, expired or revoked token; consent ended; partner suspended; a DPoP-bound token without a valid proof (`WWW-Authenticate: DPoP error=\"invalid_dpop_proof\"`) or without the server's nonce (`use_dpop_nonce`, with `DPoP-Nonce`)", content_type = "application/problem+json"),
        (status = 403, description = "The token grants no field of this resource", content_type = "application/problem+json"),
        (status = 404, description = "Unknown resource", content_type = "application/problem+json"),
        (status = 429, description = "Rate limited; see Retry-After, RateLimit-Policy, RateLimit", content_type = "application/problem+json"),
        (status = 502, description = "The claims service failed", content_type = "application/problem+json"),
        (status = 503, description = "Shared state, database or access log unavailable: no data is released", content_type = "application/problem+json"),
        (status = 504, description = "The claims service timed out", content_type = "application/problem+json"),
    )
)]
pub fn list() {}

/// One record, reduced to `id` plus the granted fields. Another customer's record answers
/// exactly like a missing one (`404`).
#[utoipa::path(
    get,
    path = "/partner/v1/{resource}/{id}",
    tag = "partner",
    operation_id = "get_record",
    params(
        ("resource" = String, Path, description = "A resource of the catalog, e.g. `claims`"),
        ("id" = String, Path, description = "Record id: 1–64 of `[A-Za-z0-9_-]`"),
        ("DPoP" = Option<String>, Header, description = "RFC 9449 proof for this request: required with `Authorization: DPoP <token>` for a DPoP-bound token"),
    ),
    security(("partner_token" = [])),
    responses(
        (status = 200, description = "The record, with `ETag`, `RateLimit-Policy` and `RateLimit`", body = Record),
        (status = 304, description = "Not modified (If-None-Match matched the ETag)"),
        (status = 400, description = "Malformed record id", content_type = "application/problem+json"),
        (status = 401, description = "Missing, invalid, expired or revoked token; consent ended; partner suspended; a DPoP-bound token without a valid proof (`WWW-Authenticate: DPoP error=\"invalid_dpop_proof\"`) or without the server's nonce (`use_dpop_nonce`, with `DPoP-Nonce`)", content_type = "application/problem+json"),
        (status = 403, description = "The token grants no field of this resource", content_type = "application/problem+json"),
        (status = 404, description = "No such record for this customer", content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", content_type = "application/problem+json"),
        (status = 502, description = "The claims service failed", content_type = "application/problem+json"),
        (status = 503, description = "Shared state, database or access log unavailable: no data is released", content_type = "application/problem+json"),
        (status = 504, description = "The claims service timed out", content_type = "application/problem+json"),
    )
)]
pub fn item() {}
