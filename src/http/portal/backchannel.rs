//! OpenID Connect Back-Channel Logout 1.0, the relying party's side: the insurer's provider
//! posts a signed logout token to `POST /portal/oidc/backchannel-logout` when a customer signs
//! out there, and every portal session that customer started through the provider ends at its
//! next request, on every instance (`session::current` reads the mark this leaves).
//!
//! Sessions are found by customer, not one by one: a token naming the subject ends all of that
//! customer's provider sessions (a subject unknown here ends nothing, whatever its `sid`); one
//! naming only the provider's session id (`sid`) finds the customer through what the sign-in
//! remembered, and ends theirs too (more than the one session, never less).
//!
//! Registered with the provider as `{public_url}/portal/oidc/backchannel-logout`. 404 without
//! `[customer_login]`. Answers (§2.8): `200` when done (also for a token already seen, or a
//! customer we do not know), `400` with an OAuth-style error for a token that does not verify,
//! `503` when the provider's keys or our shared state cannot be reached (the provider retries).

use super::oidc::provider_sign_in;
use crate::app::App;
use crate::domain::CustomerId;
use crate::error::Internal;
use crate::oidc::{OidcError, logout_token_max_age};
use crate::secrets::token_hash;
use crate::store::OidcIdentity;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, post, web};
use serde_json::json;
use std::time::Duration;

/// Where the provider posts logout tokens.
pub const BACKCHANNEL_PATH: &str = "/portal/oidc/backchannel-logout";

/// The one `logout_token` of a form-encoded body (§2.5), or what is wrong with the body.
/// Read by hand rather than by actix's form extractor, whose refusals (415 for another content
/// type, a parser's message for a repeated field) are not this endpoint's `400`.
fn logout_token_of(req: &HttpRequest, body: &[u8]) -> Result<String, &'static str> {
    let form_encoded = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| {
            essence
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_encoded {
        return Err("the body must be application/x-www-form-urlencoded");
    }
    let mut token = None;
    for (key, value) in url::form_urlencoded::parse(body) {
        if key == "logout_token" && token.replace(value).is_some() {
            return Err("logout_token is repeated");
        }
    }
    token
        .filter(|t| !t.is_empty())
        .map(|t| t.into_owned())
        .ok_or("logout_token is missing")
}

/// As long as a portal session can live: a mark or a remembered session id older than that
/// has nothing left to end.
fn session_lifetime(app: &App) -> Duration {
    Duration::from_secs(u64::from(app.settings.session.absolute_hours) * 3600)
}

fn hash_of(issuer: &str, value: &str) -> String {
    token_hash(&format!("{issuer}\n{value}"))
}

/// At sign-in: which customer the provider's session `sid` is, for a logout token naming only it.
pub async fn remember_provider_session(
    app: &App,
    sid: &str,
    customer: CustomerId,
) -> Result<(), Internal> {
    let Some((_, settings)) = provider_sign_in(app) else {
        return Ok(());
    };
    if sid.is_empty() || sid.len() > 255 {
        return Ok(());
    }
    app.state
        .put_provider_session(
            &hash_of(&settings.issuer, sid),
            customer,
            session_lifetime(app),
        )
        .await?;
    Ok(())
}

fn answer(status: actix_web::http::StatusCode, error: Option<&str>) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    response.insert_header((header::CACHE_CONTROL, "no-store"));
    match error {
        Some(description) => response.json(json!({
            "error": "invalid_request",
            "error_description": description,
        })),
        None => response.finish(),
    }
}

/// The insurer's OpenID provider says a customer signed out there (OpenID Connect Back-Channel
/// Logout 1.0): every portal session of that customer ends, on every instance.
#[utoipa::path(
    tag = "portal",
    operation_id = "backchannel_logout",
    request_body(content = crate::http::oauth::forms::LogoutTokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Done: the customer's sessions ended (also for a token already seen, or a customer not known here); no body"),
        (status = 400, description = "A body that is not one `logout_token`, or a token that does not verify (§2.8)", body = crate::error::OAuthErrorBody, content_type = "application/json"),
        (status = 404, description = "No `[customer_login]` is configured; no body"),
        (status = 413, description = "Body over 64 KiB", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The provider's keys or the shared state cannot be reached; the provider retries. No body"),
    )
)]
#[post("/portal/oidc/backchannel-logout")]
pub async fn logout(
    app: web::Data<App>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, actix_web::Error> {
    use actix_web::http::StatusCode;
    let Some((party, settings)) = provider_sign_in(&app) else {
        return Ok(HttpResponse::NotFound().finish());
    };
    let token = match logout_token_of(&req, &body) {
        Ok(token) => token,
        Err(why) => return Ok(answer(StatusCode::BAD_REQUEST, Some(why))),
    };
    let claims = match party.verify_logout_token(&token).await {
        Ok(claims) => claims,
        Err(OidcError::Refused(refusal)) => {
            tracing::warn!(reason = %refusal, "logout token refused");
            return Ok(answer(
                StatusCode::BAD_REQUEST,
                Some("the logout token does not verify"),
            ));
        }
        Err(e) => {
            tracing::warn!(error = %e, "logout token not checked: the provider or shared state is unavailable");
            return Ok(answer(StatusCode::SERVICE_UNAVAILABLE, None));
        }
    };
    match end_sessions(&app, &settings.issuer, &claims).await {
        Ok(()) => Ok(answer(StatusCode::OK, None)),
        Err(e) => {
            tracing::error!(error = %e, "a logout token could not be applied");
            Ok(answer(StatusCode::SERVICE_UNAVAILABLE, None))
        }
    }
}

async fn end_sessions(
    app: &App,
    issuer: &str,
    claims: &crate::oidc::LogoutClaims,
) -> Result<(), Internal> {
    // Who first, reading only: a failure here spends nothing, and the provider's retry of
    // this token (it gets a 503) is applied like the first try.
    let customer = signed_out_customer(app, issuer, claims).await?;
    // Once per token: a recorded one played back cannot end sessions started after it (and
    // past this window its `iat` is too old anyway).
    let window = Duration::from_secs(logout_token_max_age() * 2);
    let jti = hash_of(issuer, &claims.jti);
    if !app.state.first_logout_token(&jti, window).await? {
        tracing::info!("logout token already applied");
        return Ok(());
    }
    let Some(customer) = customer else {
        tracing::info!("logout token for nobody signed in here");
        return Ok(());
    };
    if let Err(e) = app
        .state
        .put_provider_sign_out(customer, app.clock.now(), session_lifetime(app))
        .await
    {
        // Not recorded: the provider is told to retry, and its retry must not find the token
        // spent (it would answer 200 and end nothing).
        if let Err(release) = app.state.forget_logout_token(&jti).await {
            tracing::error!(error = %release, "a logout token not applied stays spent until its window ends");
        }
        return Err(e.into());
    }
    tracing::info!(customer = %customer, "customer signed out at the provider; their portal sessions end");
    Ok(())
}

/// The customer a logout token names. Its `sub` decides when it has one: a subject we do not
/// know is nobody here, even when its `sid` was remembered for a customer (that session is
/// someone else's). Only a token without `sub` is looked up by `sid`.
async fn signed_out_customer(
    app: &App,
    issuer: &str,
    claims: &crate::oidc::LogoutClaims,
) -> Result<Option<CustomerId>, Internal> {
    match (&claims.subject, &claims.sid) {
        (Some(subject), _) => Ok(app
            .store
            .customer_by_oidc(&OidcIdentity {
                issuer: issuer.to_owned(),
                subject: subject.clone(),
            })
            .await?
            .map(|c| c.id)),
        (None, Some(sid)) => Ok(app.state.provider_session(&hash_of(issuer, sid)).await?),
        (None, None) => Ok(None),
    }
}
