//! Pushed authorization requests (RFC 9126; FAPI 2.0 requires them).
//!
//! The partner sends its authorization request over the back channel, authenticated like at the
//! token endpoint; it is checked exactly as `GET /oauth/authorize` would check it
//! ([`authorize::check`]) and kept in shared state, normalised, for [`PUSHED_REQUEST_TTL`]
//! under the hash of a random `request_uri` and its client. The browser then carries only
//! `client_id` and `request_uri`, so nothing of the request can be read or changed on the way.
//!
//! Growth is bounded per client: at most [`MAX_PUSHES_PER_MINUTE`] stored pushes in each
//! minute of the clock, so one client holds at most about twice that at once (each lives
//! 60 s); beyond, `429` `temporarily_unavailable` with `Retry-After` until the next minute.

use super::authorize::{self, AuthorizeParams, Channel};
use super::form::Form;
use crate::app::App;
use crate::error::OAuthError;
use crate::secrets::{random_token, token_hash};
use crate::state::PushedRequest;
use crate::store::Partner;
use serde::Serialize;
use std::time::Duration;

/// RFC 9126 §2.2: the URN namespace of request URIs the server made up itself.
pub const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

/// How long a `request_uri` works. Long enough for the partner to redirect the browser and
/// the customer to sign in; short, since it is a bearer reference to a consent to come.
pub const PUSHED_REQUEST_TTL: Duration = Duration::from_secs(60);

/// Pushes a client may store per minute: two orders of magnitude above any real partner's
/// rate of customers starting consent, and a hard cap on what one client holds in shared
/// state (about 600 entries of well under 1 KiB).
pub const MAX_PUSHES_PER_MINUTE: u64 = 300;

/// The window of [`MAX_PUSHES_PER_MINUTE`].
const PUSH_WINDOW_SECONDS: i64 = 60;

/// Ours are 77 characters; anything much longer is not one of ours and is not even hashed.
const MAX_REQUEST_URI_LEN: usize = 128;

/// The answer of `POST /oauth/par` (RFC 9126 §2.2).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PushedAuthorizationResponse {
    /// `urn:ietf:params:oauth:request_uri:` and 43 random base64url characters; send it to
    /// `GET /oauth/authorize` with `client_id`, once.
    pub request_uri: String,
    /// Seconds the `request_uri` works: 60.
    pub expires_in: u64,
}

/// The form of `POST /oauth/par`: the parameters of `GET /oauth/authorize` (RFC 9126 §2.1),
/// plus the client authentication of the token endpoint. Each parameter at most once (a
/// repeated one is `invalid_request`); `request_uri` is refused; other parameters are ignored.
// Only the OpenAPI document's schema: the handler reads the body with `Form`, which sees
// repeated parameters (a struct would silently keep one).
#[derive(Debug, utoipa::ToSchema)]
pub struct PushedAuthorizationForm {
    /// Must be `code`.
    #[schema(pattern = "^code$")]
    pub response_type: String,
    /// Must equal one of the partner's registered redirect URIs exactly.
    pub redirect_uri: String,
    /// Space-separated fields, each registered for the partner.
    #[schema(
        pattern = "^[a-z][a-z0-9_]{0,63}:[a-z][a-z0-9_]{0,63}( [a-z][a-z0-9_]{0,63}:[a-z][a-z0-9_]{0,63})*$"
    )]
    pub scope: String,
    /// Echoed back with the code; at most 512 bytes.
    #[schema(max_length = 512)]
    pub state: Option<String>,
    /// base64url SHA-256 of the code verifier: 43 characters, the last of which carries two
    /// zero bits.
    #[schema(pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$")]
    pub code_challenge: String,
    /// Must be `S256`.
    #[schema(pattern = "^S256$")]
    pub code_challenge_method: String,
}

/// The lookup key of a `request_uri`: the hash of its random part (the value itself is never
/// stored), or `None` for anything this server cannot have issued.
pub fn handle_hash(request_uri: &str) -> Option<String> {
    if request_uri.len() > MAX_REQUEST_URI_LEN {
        return None;
    }
    request_uri
        .strip_prefix(REQUEST_URI_PREFIX)
        .filter(|random| !random.is_empty())
        .map(token_hash)
}

/// Whether a pushed request still works by the app's clock (shared state's time to live only
/// frees the memory; the clock decides, so expiry is testable and the same on every backend).
pub fn is_current(app: &App, pushed: &PushedRequest) -> bool {
    pushed.expires_at > app.clock.now()
}

/// Checks and stores an authenticated client's pushed authorization request.
pub async fn push(
    app: &App,
    partner: Partner,
    form: &Form,
) -> Result<PushedAuthorizationResponse, OAuthError> {
    if form
        .get("client_id")
        .is_some_and(|id| id != partner.client_id.as_str())
    {
        return Err(OAuthError::invalid_request(
            "client_id is not the authenticated client",
        ));
    }
    // RFC 9126 §2.1: a pushed request cannot point at another one.
    if form.get("request_uri").is_some() {
        return Err(OAuthError::invalid_request(
            "request_uri is not allowed in a pushed authorization request",
        ));
    }
    let param = |key: &str| form.get(key).map(str::to_owned);
    let params = AuthorizeParams {
        response_type: param("response_type"),
        client_id: Some(partner.client_id.to_string()),
        redirect_uri: param("redirect_uri"),
        scope: param("scope"),
        state: param("state"),
        code_challenge: param("code_challenge"),
        code_challenge_method: param("code_challenge_method"),
        request_uri: None,
    };
    let redirect_uri = authorize::registered_redirect_uri(&partner, params.redirect_uri.as_deref())
        .ok_or_else(|| {
            OAuthError::invalid_request("redirect_uri is missing or not registered for this client")
        })?;
    let request = authorize::check(app, partner, redirect_uri, &params, Channel::Pushed)?;

    // Counted only once the request is valid: the bound is on what is stored.
    let now = app.clock.now();
    let window = now.timestamp().div_euclid(PUSH_WINDOW_SECONDS);
    let pushes = app
        .state
        .count_push(&request.partner.client_id, window, PUSHED_REQUEST_TTL)
        .await?;
    if pushes > MAX_PUSHES_PER_MINUTE {
        let into_window = now.timestamp().rem_euclid(PUSH_WINDOW_SECONDS);
        let left = u64::try_from(PUSH_WINDOW_SECONDS - into_window).unwrap_or(1);
        tracing::warn!(client_id = %request.partner.client_id, "pushed authorization requests over the limit");
        return Err(OAuthError::TooMany {
            description: format!(
                "more than {MAX_PUSHES_PER_MINUTE} pushed authorization requests in a minute"
            ),
            retry_after: Duration::from_secs(left),
        });
    }

    let random = random_token("").map_err(anyhow::Error::from)?;
    let expires_at = chrono::Duration::from_std(PUSHED_REQUEST_TTL)
        .map(|ttl| now + ttl)
        .map_err(anyhow::Error::from)?;
    let pushed = PushedRequest {
        client_id: request.partner.client_id,
        redirect_uri: request.redirect_uri,
        scopes: request.scopes,
        state: request.state,
        code_challenge: request.challenge,
        expires_at,
    };
    app.state
        .put_pushed_request(&token_hash(random.expose()), &pushed, PUSHED_REQUEST_TTL)
        .await?;
    tracing::info!(client_id = %pushed.client_id, scope = %pushed.scopes, "authorization request pushed");
    Ok(PushedAuthorizationResponse {
        request_uri: format!("{REQUEST_URI_PREFIX}{}", random.expose()),
        expires_in: PUSHED_REQUEST_TTL.as_secs(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_request_uris_this_server_could_have_issued_are_looked_up() {
        let ours = format!("{REQUEST_URI_PREFIX}{}", "a".repeat(43));
        assert_eq!(handle_hash(&ours), Some(token_hash(&"a".repeat(43))));
        // The hash is of the random part: the prefix alone names nothing.
        assert_eq!(handle_hash(REQUEST_URI_PREFIX), None);
        assert_eq!(handle_hash(&"a".repeat(43)), None);
        assert_eq!(handle_hash("https://fone.example/request.jwt"), None);
        let long = format!("{REQUEST_URI_PREFIX}{}", "a".repeat(200));
        assert_eq!(handle_hash(&long), None);
    }
}
