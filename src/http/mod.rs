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

/// The access token of a partner call and the scheme it came in: `Bearer` (RFC 6750 §2.1)
/// or `DPoP` (RFC 9449 §7.1); schemes are case-insensitive.
pub(crate) fn access_token(
    headers: &actix_web::http::header::HeaderMap,
) -> Option<(&str, crate::proxy::Scheme)> {
    // Exactly one: with two, which one a proxy on the way or the server reads is a guess.
    let mut values = headers.get_all(actix_web::http::header::AUTHORIZATION);
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
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
    let mut values = headers.get_all("dpop");
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(DpopError::Repeated);
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| DpopError::Malformed("not visible ASCII"))
}

/// Unknown paths get problem+json, like every other API error (the metrics listener's; the
/// main listener's unrouted requests go to [`routes::unrouted`]).
pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}
