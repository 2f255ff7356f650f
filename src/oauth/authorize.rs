//! The authorization endpoint's decisions (RFC 6749 §4.1, RFC 7636, RFC 9207).
//!
//! Until the client and its redirect URI are known good, errors are shown to the person and
//! never redirected (an open redirector would help phishing); after that they go back to the
//! client by redirect, with `state` and `iss`.

use crate::app::App;
use crate::domain::{ClientId, CodeChallenge, FieldSet, PkceError};
use crate::error::{Internal, PageError};
use crate::secrets::{random_token, token_hash};
use crate::state::{IssuedCode, PendingConsent};
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
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    /// Must equal one of the partner's registered redirect URIs exactly.
    pub redirect_uri: Option<String>,
    /// Space-separated fields, e.g. `claims:status claims:status_updated_at`.
    pub scope: Option<String>,
    pub state: Option<String>,
    /// base64url SHA-256 of the code verifier.
    pub code_challenge: Option<String>,
    /// Must be `S256`.
    pub code_challenge_method: Option<String>,
}

/// A request that passed every check: the consent page may be shown.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    pub partner: Partner,
    pub redirect_uri: String,
    pub scopes: FieldSet,
    pub state: Option<String>,
    pub challenge: CodeChallenge,
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

pub async fn validate(app: &App, params: &AuthorizeParams) -> Result<ValidRequest, Rejection> {
    let page = |msg: &str| Rejection::Page(PageError::BadRequest(msg.to_owned()));
    let client_id = params
        .client_id
        .as_deref()
        .and_then(|id| ClientId::parse(id).ok())
        .ok_or_else(|| page("This link is not valid: it names no known partner."))?;
    let partner = app
        .store
        .partner(&client_id)
        .await
        .map_err(|e| Rejection::Page(e.into()))?
        .filter(|p| p.status == PartnerStatus::Active)
        .ok_or_else(|| page("This link is not valid: it names no known partner."))?;
    let redirect_uri = params
        .redirect_uri
        .as_deref()
        .filter(|uri| partner.redirect_uris.iter().any(|r| r == uri))
        .ok_or_else(|| {
            page("This link is not valid: the partner's return address is not registered.")
        })?
        .to_owned();

    // `state` is stored with the pending consent and echoed back: bounded like every other
    // string a caller chooses. An oversized one is not echoed either.
    let oversized_state = params
        .state
        .as_ref()
        .is_some_and(|s| s.len() > MAX_STATE_LEN);
    let state = params
        .state
        .clone()
        .filter(|s| !s.is_empty() && s.len() <= MAX_STATE_LEN);
    let back = |error: &str, description: &str| {
        Rejection::Redirect(error_redirect(
            app,
            &redirect_uri,
            error,
            description,
            state.as_deref(),
        ))
    };

    if oversized_state {
        return Err(back("invalid_request", "state is longer than 512 bytes"));
    }
    if params.response_type.as_deref() != Some("code") {
        return Err(back(
            "unsupported_response_type",
            "only response_type=code is supported",
        ));
    }
    let challenge = CodeChallenge::parse(
        params.code_challenge_method.as_deref(),
        params.code_challenge.as_deref(),
    )
    .map_err(|e: PkceError| back("invalid_request", &e.to_string()))?;
    let scopes = FieldSet::parse(params.scope.as_deref().unwrap_or(""))
        .map_err(|e| back("invalid_scope", &e.to_string()))?;
    if let Some(outside) = scopes.difference(&partner.fields).next() {
        return Err(back(
            "invalid_scope",
            &format!("{outside} is not registered for this client"),
        ));
    }
    if let Err(e) = app.catalog.check(&scopes) {
        return Err(back("invalid_scope", &e.to_string()));
    }
    Ok(ValidRequest {
        partner,
        redirect_uri,
        scopes,
        state,
        challenge,
    })
}

/// The longest `state` a partner may send: room for any signed or encrypted value it needs.
pub const MAX_STATE_LEN: usize = 512;

/// Consent requests one customer may have parked at once (each lives `CONSENT_TTL`): enough
/// for several tabs, far too few for one account to fill shared state. Counted per customer,
/// not per session, so signing in again buys nothing.
pub const MAX_PENDING_CONSENTS: u64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum ParkError {
    #[error("too many consent requests are waiting for this session")]
    TooMany,
    #[error(transparent)]
    Internal(#[from] Internal),
}

/// Parks a validated request until the customer decides; returns its single-use id. A
/// customer may have at most [`MAX_PENDING_CONSENTS`] parked in `CONSENT_TTL`.
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
        return Err(ParkError::TooMany);
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
