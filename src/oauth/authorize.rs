//! The authorization endpoint's decisions (RFC 6749 §4.1, RFC 7636, RFC 9207, RFC 9126).
//!
//! Until the client and its redirect URI are known good, errors are shown to the person and
//! never redirected (an open redirector would help phishing); after that they go back to the
//! client by redirect, with `state` and `iss`.
//!
//! The checks on the request itself live once, in [`check`]: `GET /oauth/authorize` runs them
//! on its query, `POST /oauth/par` on the pushed form (answering JSON instead of redirecting),
//! and `GET /oauth/authorize?request_uri=…` runs them again on what was pushed, because the
//! partner's registration may have changed in between.

use super::par;
use crate::app::App;
use crate::domain::{ClientId, CodeChallenge, FieldSet, PkceError};
use crate::error::{Internal, OAuthError, OAuthErrorCode, PageError};
use crate::secrets::{random_token, token_hash};
use crate::state::{IssuedCode, PendingConsent, PushedRequest};
use crate::store::{Partner, PartnerStatus};
use serde::Deserialize;
use std::time::Duration;
use url::Url;

/// Codes live 60 s: long enough for a redirect and a back-channel call, no longer.
pub const CODE_TTL: Duration = Duration::from_secs(60);
/// How long the customer may look at the consent page before deciding.
pub const CONSENT_TTL: Duration = Duration::from_secs(600);

/// The query of `GET /oauth/authorize`, as sent.
#[derive(Debug, Default, Deserialize, Clone, utoipa::IntoParams)]
pub struct AuthorizeParams {
    /// Must be `code`.
    #[param(pattern = "^code$")]
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    /// Must equal one of the partner's registered redirect URIs exactly.
    pub redirect_uri: Option<String>,
    /// Space-separated fields, e.g. `claims:status claims:status_updated_at`.
    #[param(
        pattern = "^[a-z][a-z0-9_]{0,63}:[a-z][a-z0-9_]{0,63}( [a-z][a-z0-9_]{0,63}:[a-z][a-z0-9_]{0,63})*$"
    )]
    pub scope: Option<String>,
    /// Echoed back; at most 512 bytes.
    #[param(max_length = 512)]
    pub state: Option<String>,
    /// base64url SHA-256 of the code verifier: 43 characters, the last of which carries two
    /// zero bits.
    #[param(pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$")]
    pub code_challenge: Option<String>,
    /// Must be `S256`.
    #[param(pattern = "^S256$")]
    pub code_challenge_method: Option<String>,
    /// The `request_uri` that `POST /oauth/par` answered (RFC 9126 §4). With it, only
    /// `client_id` (which must be the client that pushed it) counts: every other parameter
    /// here is ignored and the pushed ones apply. Works once, for 60 s.
    pub request_uri: Option<String>,
}

/// How an authorization request reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Its parameters in the query of `GET /oauth/authorize`.
    Query,
    /// Pushed first by the authenticated client (`POST /oauth/par`, RFC 9126).
    Pushed,
}

/// A request that passed every check: the consent page may be shown.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    pub partner: Partner,
    pub redirect_uri: String,
    pub scopes: FieldSet,
    pub state: Option<String>,
    pub challenge: CodeChallenge,
    /// For a pushed request, the hash of its `request_uri`: spent when the consent is parked.
    pub pushed: Option<String>,
}

/// A request refused once its client and redirect URI are known good (RFC 6749 §4.1.2.1):
/// `GET /oauth/authorize` sends it back by redirect, `POST /oauth/par` answers it as JSON
/// (RFC 9126 §2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: OAuthErrorCode,
    pub description: String,
}

impl Refused {
    fn new(code: OAuthErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }
}

impl From<Refused> for OAuthError {
    fn from(refused: Refused) -> Self {
        OAuthError::new(refused.code, refused.description)
    }
}

#[derive(Debug)]
pub enum Rejection {
    /// Shown to the person.
    Page(PageError),
    /// Sent back to the verified redirect URI.
    Redirect(String),
}

impl From<Internal> for Rejection {
    fn from(e: Internal) -> Self {
        Rejection::Page(PageError::Internal(e))
    }
}

impl From<crate::state::StateError> for Rejection {
    fn from(e: crate::state::StateError) -> Self {
        Rejection::Page(e.into())
    }
}

/// `redirect_uri` with the given parameters added to any query it already has.
pub fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    match Url::parse(redirect_uri) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(params);
            url.to_string()
        }
        // Registered URIs are validated absolute URLs; this is unreachable in practice.
        Err(_) => redirect_uri.to_owned(),
    }
}

pub fn error_redirect(
    app: &App,
    redirect_uri: &str,
    error: &str,
    description: &str,
    state: Option<&str>,
) -> String {
    let issuer = app.issuer();
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(state) = state {
        params.push(("state", state));
    }
    params.push(("iss", issuer.as_str()));
    redirect_with(redirect_uri, &params)
}

/// The longest `state` a partner may send: room for any signed or encrypted value it needs.
pub const MAX_STATE_LEN: usize = 512;

/// The `state` that may be stored and echoed: present, non-empty and within its bound (an
/// oversized one is refused and not echoed either).
fn echoable_state(state: Option<&str>) -> Option<String> {
    state
        .filter(|s| !s.is_empty() && s.len() <= MAX_STATE_LEN)
        .map(str::to_owned)
}

/// The redirect URI, when it is exactly one the partner registered.
pub fn registered_redirect_uri(partner: &Partner, redirect_uri: Option<&str>) -> Option<String> {
    redirect_uri
        .filter(|uri| partner.redirect_uris.iter().any(|r| r == uri))
        .map(str::to_owned)
}

/// Every check an authorization request must pass once its client (`partner`) and its
/// `redirect_uri` (registered, see [`registered_redirect_uri`]) are known good; the one place
/// these checks live. `params.client_id` and `params.request_uri` are not looked at: the
/// callers have settled both.
pub fn check(
    app: &App,
    partner: Partner,
    redirect_uri: String,
    params: &AuthorizeParams,
    channel: Channel,
) -> Result<ValidRequest, Refused> {
    // First, so a partner held to pushed requests learns exactly that, whatever else is wrong.
    if channel == Channel::Query && (partner.fapi.require_par || app.settings.require_par) {
        return Err(Refused::new(
            OAuthErrorCode::InvalidRequest,
            "this client must push its authorization requests to the pushed_authorization_request_endpoint (RFC 9126) and send only client_id and request_uri here",
        ));
    }
    // `state` is stored with the pending consent and echoed back: bounded like every other
    // string a caller chooses.
    if params
        .state
        .as_ref()
        .is_some_and(|s| s.len() > MAX_STATE_LEN)
    {
        return Err(Refused::new(
            OAuthErrorCode::InvalidRequest,
            "state is longer than 512 bytes",
        ));
    }
    if params.response_type.as_deref() != Some("code") {
        return Err(Refused::new(
            OAuthErrorCode::UnsupportedResponseType,
            "only response_type=code is supported",
        ));
    }
    let challenge = CodeChallenge::parse(
        params.code_challenge_method.as_deref(),
        params.code_challenge.as_deref(),
    )
    .map_err(|e: PkceError| Refused::new(OAuthErrorCode::InvalidRequest, e.to_string()))?;
    let scopes = FieldSet::parse(params.scope.as_deref().unwrap_or(""))
        .map_err(|e| Refused::new(OAuthErrorCode::InvalidScope, e.to_string()))?;
    if let Some(outside) = scopes.difference(&partner.fields).next() {
        return Err(Refused::new(
            OAuthErrorCode::InvalidScope,
            format!("{outside} is not registered for this client"),
        ));
    }
    if let Err(e) = app.catalog.check(&scopes) {
        return Err(Refused::new(OAuthErrorCode::InvalidScope, e.to_string()));
    }
    Ok(ValidRequest {
        partner,
        redirect_uri,
        scopes,
        state: echoable_state(params.state.as_deref()),
        challenge,
        pushed: None,
    })
}

const UNKNOWN_CLIENT: &str = "This link is not valid: it names no known partner.";
const UNREGISTERED_REDIRECT: &str =
    "This link is not valid: the partner's return address is not registered.";
const UNKNOWN_REQUEST_URI: &str = "This link is not valid: it has expired or was already used. \
     Please start again from the partner's website or app.";

fn page(message: &str) -> Rejection {
    Rejection::Page(PageError::BadRequest(message.to_owned()))
}

/// The checks of `GET /oauth/authorize`: the client, then either its pushed request (with a
/// `request_uri`) or the query's parameters.
///
/// A pushed request is only *read* here, never spent: the same URL is legitimately fetched
/// twice (a customer without a session gets the sign-in page, or goes to the insurer's
/// provider, and comes back to this URL). It is spent by [`park`], atomically, when the
/// consent page is shown: that is the one step of the flow that happens once per
/// authorization, and the pushed request's job ends there (the pending consent carries
/// everything after it). A second park of the same `request_uri`, a replay or a race, finds
/// nothing and gets an error page.
pub async fn validate(app: &App, params: &AuthorizeParams) -> Result<ValidRequest, Rejection> {
    let client_id = params
        .client_id
        .as_deref()
        .and_then(|id| ClientId::parse(id).ok())
        .ok_or_else(|| page(UNKNOWN_CLIENT))?;
    let partner = app
        .store
        .partner(&client_id)
        .await
        .map_err(|e| Rejection::Page(e.into()))?
        .filter(|p| p.status == PartnerStatus::Active)
        .ok_or_else(|| page(UNKNOWN_CLIENT))?;
    // Empty counts as absent, as for every OAuth parameter (RFC 6749 §3.1).
    match params.request_uri.as_deref().filter(|uri| !uri.is_empty()) {
        Some(request_uri) => validate_pushed(app, partner, request_uri).await,
        None => validate_params(app, partner, params, Channel::Query),
    }
}

/// A pushed request, by its `request_uri`: only the client that pushed it finds it, and only
/// until it expires or is spent. Nothing in it is trusted as it was: it is checked again.
async fn validate_pushed(
    app: &App,
    partner: Partner,
    request_uri: &str,
) -> Result<ValidRequest, Rejection> {
    let Some(handle) = par::handle_hash(request_uri) else {
        return Err(page(UNKNOWN_REQUEST_URI));
    };
    let pushed = app
        .state
        .pushed_request(&partner.client_id, &handle)
        .await?
        .filter(|pushed| par::is_current(app, pushed))
        .ok_or_else(|| page(UNKNOWN_REQUEST_URI))?;
    let mut request = validate_params(app, partner, &pushed_params(&pushed), Channel::Pushed)?;
    request.pushed = Some(handle);
    Ok(request)
}

/// The parameters a pushed request stands for, to be checked like a query's.
fn pushed_params(pushed: &PushedRequest) -> AuthorizeParams {
    AuthorizeParams {
        response_type: Some("code".into()),
        client_id: Some(pushed.client_id.to_string()),
        redirect_uri: Some(pushed.redirect_uri.clone()),
        scope: Some(pushed.scopes.to_string()),
        state: pushed.state.clone(),
        code_challenge: Some(pushed.code_challenge.as_str().to_owned()),
        code_challenge_method: Some("S256".into()),
        request_uri: None,
    }
}

fn validate_params(
    app: &App,
    partner: Partner,
    params: &AuthorizeParams,
    channel: Channel,
) -> Result<ValidRequest, Rejection> {
    let redirect_uri = registered_redirect_uri(&partner, params.redirect_uri.as_deref())
        .ok_or_else(|| page(UNREGISTERED_REDIRECT))?;
    check(app, partner, redirect_uri.clone(), params, channel).map_err(|refused| {
        Rejection::Redirect(error_redirect(
            app,
            &redirect_uri,
            refused.code.as_str(),
            &refused.description,
            echoable_state(params.state.as_deref()).as_deref(),
        ))
    })
}

/// Consent requests one customer may have parked at once (each lives `CONSENT_TTL`): enough
/// for several tabs, far too few for one account to fill shared state. Counted per customer,
/// not per session, so signing in again buys nothing.
pub const MAX_PENDING_CONSENTS: u64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum ParkError {
    #[error("too many consent requests are waiting for this session")]
    TooMany,
    /// The request's `request_uri` was spent (by another park: a reload, a replay or a race)
    /// or expired since it was validated.
    #[error("the pushed authorization request was already used or has expired")]
    PushedRequestUsed,
    #[error(transparent)]
    Internal(#[from] Internal),
}

/// Parks a validated request until the customer decides; returns its single-use id. A
/// customer may have at most [`MAX_PENDING_CONSENTS`] parked in `CONSENT_TTL`. A pushed
/// request's `request_uri` is spent here (see [`validate`] for why here).
pub async fn park(
    app: &App,
    request: &ValidRequest,
    customer_id: crate::domain::CustomerId,
) -> Result<String, ParkError> {
    let parked = app
        .state
        .count_pending_consent(&customer_id.to_string(), CONSENT_TTL)
        .await
        .map_err(Internal::from)?;
    if parked > MAX_PENDING_CONSENTS {
        // Before the pushed request is spent: a customer who closes other consent pages may
        // retry the same link while it lives.
        return Err(ParkError::TooMany);
    }
    if let Some(handle) = &request.pushed {
        let taken = app
            .state
            .take_pushed_request(&request.partner.client_id, handle)
            .await
            .map_err(Internal::from)?;
        if !taken.is_some_and(|pushed| par::is_current(app, &pushed)) {
            return Err(ParkError::PushedRequestUsed);
        }
    }
    let id = random_token("").map_err(|e| Internal::from(anyhow::Error::from(e)))?;
    let pending = PendingConsent {
        customer_id,
        client_id: request.partner.client_id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        scopes: request.scopes.clone(),
        state: request.state.clone(),
        code_challenge: request.challenge.clone(),
    };
    app.state
        .put_pending_consent(id.expose(), &pending, CONSENT_TTL)
        .await
        .map_err(Internal::from)?;
    Ok(id.expose().to_owned())
}

/// The customer said no, or unticked every field.
pub fn deny(app: &App, pending: &PendingConsent) -> String {
    error_redirect(
        app,
        &pending.redirect_uri,
        "access_denied",
        "the customer did not give consent",
        pending.state.as_deref(),
    )
}

/// The customer allowed `selected` (a subset of what was asked): create the grant and a code.
pub async fn approve(
    app: &App,
    pending: &PendingConsent,
    selected: &FieldSet,
) -> Result<String, PageError> {
    if !selected.is_subset(&pending.scopes) {
        return Err(PageError::BadRequest(
            "You can only share information the partner asked for.".into(),
        ));
    }
    // The partner may have been suspended while the page was open.
    let partner = app.store.partner(&pending.client_id).await?;
    if !partner.is_some_and(|p| p.status == PartnerStatus::Active) {
        return Err(PageError::BadRequest(
            "This partner can no longer receive access.".into(),
        ));
    }
    let now = app.clock.now();
    let expires_at = now + chrono::Duration::days(i64::from(app.settings.grant_lifetime_days));
    let grant = app
        .store
        .insert_grant(
            pending.customer_id,
            &pending.client_id,
            selected,
            now,
            expires_at,
        )
        .await?;
    super::grants::publish_active(app, grant.id, expires_at).await?;

    let code = random_token("kh_ac_").map_err(anyhow::Error::from)?;
    let issued = IssuedCode {
        client_id: pending.client_id.clone(),
        redirect_uri: pending.redirect_uri.clone(),
        code_challenge: pending.code_challenge.clone(),
        grant_id: grant.id,
        customer_id: pending.customer_id,
        scopes: selected.clone(),
        expires_at: chrono::Duration::from_std(CODE_TTL)
            .ok()
            .map(|ttl| app.clock.now() + ttl),
    };
    app.state
        .put_code(&token_hash(code.expose()), issued, CODE_TTL)
        .await?;
    tracing::info!(grant_id = %grant.id, client_id = %pending.client_id, scope = %selected, "consent given");

    let issuer = app.issuer();
    let mut params = vec![("code", code.expose())];
    if let Some(state) = pending.state.as_deref() {
        params.push(("state", state));
    }
    params.push(("iss", issuer.as_str()));
    Ok(redirect_with(&pending.redirect_uri, &params))
}
