//! The back-channel endpoints: token, revocation, introspection. Client-authenticated,
//! form-encoded, answering in the RFC 6749 §5.2 JSON form.

use crate::app::App;
use crate::dpop::{self, DpopError, Proof};
use crate::error::{Internal, OAuthError, OAuthErrorCode};
use crate::oauth::client_auth::ClientCredentials;
use crate::oauth::form::Form;
use crate::oauth::introspection::{self, Introspection};
use crate::oauth::revocation;
use crate::oauth::token::{self as token_grant, TokenResponse};
use crate::store::Partner;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, post, web};

/// Client authentication, the same at every back-channel endpoint (`par.rs` too).
pub(super) async fn authenticate(
    app: &App,
    req: &HttpRequest,
    body: &[u8],
) -> Result<(Partner, Form), OAuthError> {
    let form = Form::parse(body)?;
    // RFC 6749 §2.3: one method, so one header.
    let authorization = crate::http::single_header(req.headers(), header::AUTHORIZATION)
        .map_err(|_| OAuthError::invalid_request("send one Authorization header, not several"))?
        .and_then(|v| v.to_str().ok());
    let partner = ClientCredentials::extract(authorization, &form)?
        .authenticate(app)
        .await?;
    Ok((partner, form))
}

/// The token request's DPoP proof, checked (`htm` POST, `htu` the token endpoint) and its
/// `jti` spent across instances; `None` without one.
async fn token_proof(app: &App, req: &HttpRequest) -> Result<Option<Proof>, OAuthError> {
    let now = app.clock.now();
    let refuse = |e: DpopError| match e {
        DpopError::UseNonce => OAuthError::UseDpopNonce {
            nonce: app.dpop.nonce(now),
        },
        other => OAuthError::new(OAuthErrorCode::InvalidDpopProof, other.to_string()),
    };
    let Some(proof) = crate::http::dpop_proof(req.headers()).map_err(refuse)? else {
        return Ok(None);
    };
    let uri = app
        .dpop
        .token_uri()
        .ok_or_else(|| Internal::Other(anyhow::anyhow!("the issuer is not a URL")))?;
    let proof = app
        .dpop
        .check(proof, "POST", uri, None, now)
        .map_err(refuse)?;
    if !app
        .state
        .first_dpop_proof(&dpop::replay_id(&proof), app.dpop.replay_ttl())
        .await?
    {
        return Err(refuse(DpopError::Replayed));
    }
    Ok(Some(proof))
}

pub(super) fn no_store(
    mut response: actix_web::HttpResponseBuilder,
) -> actix_web::HttpResponseBuilder {
    response
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"));
    response
}

/// Exchanges an authorization code (with its PKCE verifier) or a refresh token for tokens.
///
/// Form fields: `grant_type` (`authorization_code` or `refresh_token`); for codes `code`,
/// `redirect_uri`, `code_verifier`; for refresh `refresh_token` and optionally a narrower
/// `scope`. Client authentication (here and at revocation and introspection): HTTP Basic or
/// `client_id` + `client_secret` in the form for partners registered with a secret;
/// `client_assertion_type` (`urn:ietf:params:oauth:client-assertion-type:jwt-bearer`) +
/// `client_assertion` (RFC 7523 `private_key_jwt`, `aud` = the issuer) for partners registered
/// with keys.
///
/// Codes and refresh tokens are single use, and a second use revokes the grant — except a
/// retry: the same client repeating the same request within `reuse_grace_seconds` (default
/// 5) of the first use gets the first answer again (same tokens, `expires_in` what is left).
/// A retry that arrives while the first use is still being answered may get `invalid_grant`
/// instead, and nothing is revoked.
#[utoipa::path(
    tag = "oauth",
    operation_id = "token",
    security(("client_secret_basic" = []), ()),
    request_body(content = super::forms::TokenForm, content_type = "application/x-www-form-urlencoded", description = "RFC 6749 §4.1.3 / §6 token request"),
    params(("DPoP" = Option<String>, Header, description = "RFC 9449 proof (htm POST, htu this endpoint): the tokens are bound to its key; required for a DPoP-bound refresh token and for partners registered with --require-dpop")),
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, description = "RFC 6749 §5.2 error (invalid_request, invalid_grant, invalid_scope, unsupported_grant_type; RFC 9449 invalid_dpop_proof, use_dpop_nonce with a DPoP-Nonce header); a reused code or refresh token also revokes its grant"),
    )
)]
#[post("/oauth/token")]
pub async fn token(
    app: web::Data<App>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, OAuthError> {
    let (partner, form) = authenticate(&app, &req, &body).await?;
    let proof = token_proof(&app, &req).await?;
    let response = token_grant::handle(&app, &partner, &form, proof.as_ref()).await?;
    let mut ok = no_store(HttpResponse::Ok());
    if app.dpop.requires_nonce() {
        ok.insert_header(("DPoP-Nonce", app.dpop.nonce(app.clock.now())));
    }
    Ok(ok.json(response))
}

/// Revokes a refresh token (ending its grant) or an access token (by `jti`) (RFC 7009).
///
/// Answers 200 whether or not the token was known, valid or the caller's own.
#[utoipa::path(
    tag = "oauth",
    operation_id = "revoke_token",
    security(("client_secret_basic" = []), ()),
    request_body(content = super::forms::TokenHintForm, content_type = "application/x-www-form-urlencoded", description = "RFC 7009 §2.1"),
    responses(
        (status = 200, description = "Revoked, or nothing to revoke; no body"),
        (status = 400, description = "invalid_request (no `token`, a repeated parameter)"),
    )
)]
#[post("/oauth/revoke")]
pub async fn revoke(
    app: web::Data<App>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, OAuthError> {
    let (partner, form) = authenticate(&app, &req, &body).await?;
    revocation::revoke(&app, &partner, &form).await?;
    Ok(no_store(HttpResponse::Ok()).finish())
}

/// Tells a partner whether one of its tokens is active, and what it grants (RFC 7662).
#[utoipa::path(
    tag = "oauth",
    operation_id = "introspect_token",
    security(("client_secret_basic" = []), ()),
    request_body(content = super::forms::TokenHintForm, content_type = "application/x-www-form-urlencoded", description = "RFC 7662 §2.1"),
    responses(
        (status = 200, body = Introspection, description = "`{\"active\": false}` for a token that is not active or not this client's"),
        (status = 400, description = "invalid_request (no `token`, a repeated parameter)"),
    )
)]
#[post("/oauth/introspect")]
pub async fn introspect(
    app: web::Data<App>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, OAuthError> {
    let (partner, form) = authenticate(&app, &req, &body).await?;
    let answer = introspection::introspect(&app, &partner, &form).await?;
    Ok(no_store(HttpResponse::Ok()).json(answer))
}
