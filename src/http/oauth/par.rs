//! `POST /oauth/par`: pushed authorization requests (RFC 9126).

use super::endpoints::{authenticate, no_store};
use crate::app::App;
use crate::error::OAuthError;
use crate::oauth::par::{self, PushedAuthorizationForm, PushedAuthorizationResponse};
use actix_web::{HttpRequest, HttpResponse, post, web};

/// Pushes an authorization request (RFC 9126) before the browser is sent to
/// `GET /oauth/authorize?client_id=…&request_uri=…`.
///
/// Client authentication as at the token endpoint. The request is checked as the
/// authorization endpoint would check it (`response_type=code`, a registered `redirect_uri`,
/// `scope` within the partner's fields, `state` ≤ 512 bytes, PKCE `S256`); errors are the
/// RFC 6749 §5.2 JSON form. The `request_uri` works once, for 60 s, and only for the client
/// that pushed it; the authorization endpoint then ignores every other query parameter. At
/// most 300 pushes per client per minute; beyond, `429` `temporarily_unavailable` with
/// `Retry-After`.
#[utoipa::path(
    tag = "oauth",
    operation_id = "pushed_authorization_request",
    security(("client_secret_basic" = []), ()),
    request_body(
        content = PushedAuthorizationForm,
        content_type = "application/x-www-form-urlencoded",
        description = "The authorization request's parameters (RFC 9126 §2.1) and client authentication",
    ),
    responses(
        (status = 201, body = PushedAuthorizationResponse, description = "Stored; `Cache-Control: no-store`"),
        (status = 400, description = "RFC 6749 §5.2 error: invalid_request (a repeated parameter, `request_uri` in the request, a `client_id` other than the authenticated one, an unregistered `redirect_uri`, bad PKCE, `state` over 512 bytes), unsupported_response_type, invalid_scope"),
        (status = 429, description = "More than 300 pushes by this client in the current minute: `temporarily_unavailable`, with `Retry-After` (seconds)"),
    )
)]
#[post("/oauth/par")]
pub async fn push(
    app: web::Data<App>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, OAuthError> {
    let (partner, form) = authenticate(&app, &req, &body).await?;
    let pushed = par::push(&app, partner, &form).await?;
    Ok(no_store(HttpResponse::Created()).json(pushed))
}
