//! HTTP: routes, middleware, and the handlers of each surface. Handlers are thin: extract,
//! authorise, call one service function, map the result.

pub mod admin;
pub mod console;
pub mod csv;
pub mod demo;
pub mod middleware;
pub mod oauth;
pub mod openapi;
pub mod ops;
pub mod pages;
pub mod partner;
pub mod portal;
pub mod routes;
pub mod session;
pub mod source;

use crate::error::ApiError;
use actix_web::web;

/// Every request body is capped here (and by the extractors' own limits for chunked bodies).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    // The partner API first: a plain prefix match, then hand-split segments.
    cfg.service(web::scope("/partner/v1").default_service(web::to(partner::dispatch)))
        .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .app_data(web::FormConfig::default().limit(MAX_BODY_BYTES))
        .app_data(web::JsonConfig::default().limit(MAX_BODY_BYTES))
        .service(ops::healthz)
        .service(ops::readyz)
        .service(ops::metrics)
        .service(oauth::metadata::metadata)
        .service(oauth::metadata::jwks)
        .service(oauth::authorize::start)
        .service(oauth::authorize::decide)
        .service(oauth::endpoints::token)
        .service(oauth::endpoints::revoke)
        .service(oauth::endpoints::introspect)
        .service(oauth::par::push)
        .service(portal::login::show)
        .service(portal::login::submit)
        .service(portal::login::logout)
        .service(portal::oidc::callback)
        .service(portal::oidc::signed_out)
        .service(portal::backchannel::logout)
        .service(portal::grants::overview)
        .service(portal::grants::export_csv)
        .service(portal::grants::export_json)
        .service(portal::grants::show)
        .service(portal::grants::confirm_revoke)
        .service(portal::grants::revoke)
        .service(pages::stylesheet)
        .configure(console::routes)
        .configure(admin::routes);
}

/// The bearer token of RFC 6750 §2.1; the scheme is case-insensitive.
pub(crate) fn bearer(headers: &actix_web::http::header::HeaderMap) -> Option<&str> {
    access_token(headers)
        .filter(|(_, scheme)| *scheme == crate::proxy::Scheme::Bearer)
        .map(|(token, _)| token)
}

/// A header that was sent more than once where only one may be.
#[derive(Debug)]
pub(crate) struct Repeated;

/// The request's one `name` header, if any. Several are refused, never picked from: which one
/// counts would depend on who reads them (a proxy on the way, or this server).
pub(crate) fn single_header(
    headers: &actix_web::http::header::HeaderMap,
    name: actix_web::http::header::HeaderName,
) -> Result<Option<&actix_web::http::header::HeaderValue>, Repeated> {
    let mut values = headers.get_all(name);
    let first = values.next();
    match values.next() {
        Some(_) => Err(Repeated),
        None => Ok(first),
    }
}

/// The access token of a partner call and the scheme it came in: `Bearer` (RFC 6750 §2.1)
/// or `DPoP` (RFC 9449 §7.1); schemes are case-insensitive. Two `Authorization` headers are
/// no token.
pub(crate) fn access_token(
    headers: &actix_web::http::header::HeaderMap,
) -> Option<(&str, crate::proxy::Scheme)> {
    let value = single_header(headers, actix_web::http::header::AUTHORIZATION)
        .ok()??
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        crate::proxy::Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        crate::proxy::Scheme::Dpop
    } else {
        return None;
    };
    Some((token.trim(), scheme)).filter(|(t, _)| !t.is_empty())
}

/// The request's one `DPoP` header (RFC 9449 §4.3: exactly one), if any.
pub(crate) fn dpop_proof(
    headers: &actix_web::http::header::HeaderMap,
) -> Result<Option<&str>, crate::dpop::DpopError> {
    use crate::dpop::DpopError;
    let proof = single_header(
        headers,
        actix_web::http::header::HeaderName::from_static("dpop"),
    )
    .map_err(|Repeated| DpopError::Repeated)?;
    proof
        .map(|v| v.to_str())
        .transpose()
        .map_err(|_| DpopError::Malformed("not visible ASCII"))
}

/// Unknown paths get problem+json, like every other API error (the metrics listener's; the
/// main listener's unrouted requests go to [`routes::unrouted`]).
pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}
