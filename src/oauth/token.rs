//! The token endpoint's grants: `authorization_code` (with PKCE) and `refresh_token`
//! (rotating, with reuse detection).

use super::form::Form;
use super::grants;
use crate::app::App;
use crate::domain::{CodeVerifier, FieldSet, pairwise_subject};
use crate::error::{OAuthError, OAuthErrorCode};
use crate::secrets::{random_token, token_hash};
use crate::state::{CodeLookup, CodeSpend};
use crate::store::{Grant, Partner, RefreshOutcome, RevokedBy};
use crate::tokens::AccessClaims;
use serde::Serialize;

/// The successful answer (RFC 6749 §5.1).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// An RFC 9068 JWT, EdDSA-signed.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds, at most 300.
    pub expires_in: u32,
    /// Opaque; single use: every refresh returns a new one.
    pub refresh_token: String,
    /// The granted fields, space-separated.
    pub scope: String,
}

pub async fn handle(
    app: &App,
    partner: &Partner,
    form: &Form,
) -> Result<TokenResponse, OAuthError> {
    match form.require("grant_type")? {
        "authorization_code" => exchange_code(app, partner, form).await,
        "refresh_token" => refresh(app, partner, form).await,
        other => Err(OAuthError::new(
            OAuthErrorCode::UnsupportedGrantType,
            format!(
                "grant_type `{}` is not supported",
                other.chars().take(40).collect::<String>()
            ),
        )),
    }
}

async fn exchange_code(
    app: &App,
    partner: &Partner,
    form: &Form,
) -> Result<TokenResponse, OAuthError> {
    let code = form.require("code")?;
    let redirect_uri = form.require("redirect_uri")?;
    let verifier = CodeVerifier::parse(form.require("code_verifier")?)
        .map_err(|e| OAuthError::invalid_request(e.to_string()))?;

    let hash = token_hash(code);
    // Everything the presenter could get wrong is checked before the code is spent, so a wrong
    // verifier or redirect_uri leaves the partner's code usable.
    let issued = match app.state.code(&hash).await? {
        CodeLookup::Issued(issued) => issued,
        CodeLookup::Redeemed {
            grant_id,
            client_id,
        } => return Err(replayed(app, partner, grant_id, client_id.as_ref()).await?),
        CodeLookup::Unknown => {
            return Err(OAuthError::invalid_grant("the code is invalid or expired"));
        }
    };
    // Shared state drops a code at its expiry; this also holds a code given back after a
    // failed exchange to the time it was first given.
    if issued.expires_at.is_some_and(|at| at <= app.clock.now()) {
        return Err(OAuthError::invalid_grant("the code is invalid or expired"));
    }
    if issued.client_id != partner.client_id {
        return Err(OAuthError::invalid_grant(
            "the code was issued to another client",
        ));
    }
    if issued.redirect_uri != redirect_uri {
        return Err(OAuthError::invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    if !issued.code_challenge.is_satisfied_by(&verifier) {
        return Err(OAuthError::invalid_grant(
            "code_verifier does not match the code_challenge",
        ));
    }
    let grant = usable_grant(app, issued.grant_id).await?;
    match app.state.spend_code(&hash, &issued).await? {
        CodeSpend::Spent => {}
        CodeSpend::AlreadySpent => {
            return Err(replayed(app, partner, issued.grant_id, Some(&issued.client_id)).await?);
        }
        CodeSpend::Gone => {
            return Err(OAuthError::invalid_grant("the code is invalid or expired"));
        }
    }
    match issue(app, partner, &grant, &issued.scopes, None).await {
        Ok(tokens) => Ok(tokens),
        Err(e) => {
            // Nothing was issued: give the code back for what is left of its life, so the
            // partner's retry is a first use and not a replay that revokes the grant.
            let left = issued
                .expires_at
                .map(|at| (at - app.clock.now()).to_std().unwrap_or_default())
                .unwrap_or(CODE_RETRY);
            // A code whose life is over is forgotten instead: its retry then reads as
            // expired, never as a replay.
            let restored = if left.is_zero() {
                app.state.forget_code(&hash).await
            } else {
                app.state.unspend_code(&hash, issued, left).await
            };
            if let Err(restore) = restored {
                tracing::warn!(error = %restore, "restoring an unspent authorization code failed");
            }
            Err(e)
        }
    }
}

/// How long a code given back after a failed exchange stays usable when it does not know its
/// own expiry (codes issued before it was kept).
const CODE_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// A spent code came back. RFC 6749 §4.1.2: when its own client presents it again, what the
/// first use issued is revoked (the code leaked, or the client is confused: both lose). Any
/// other client's presentation changes nothing: it must not be able to end someone's grant.
async fn replayed(
    app: &App,
    partner: &Partner,
    grant_id: crate::domain::GrantId,
    owner: Option<&crate::domain::ClientId>,
) -> Result<OAuthError, OAuthError> {
    if owner.is_none_or(|owner| *owner == partner.client_id) {
        tracing::warn!(grant_id = %grant_id, client_id = %partner.client_id, "authorization code replayed; revoking the grant");
        grants::revoke(app, grant_id, RevokedBy::CodeReuse).await?;
    } else {
        tracing::warn!(client_id = %partner.client_id, "another client presented a spent authorization code");
    }
    Ok(OAuthError::invalid_grant("the code was already used"))
}

async fn refresh(app: &App, partner: &Partner, form: &Form) -> Result<TokenResponse, OAuthError> {
    let presented = token_hash(form.require("refresh_token")?);
    // Ownership first: another client presenting this token must change nothing.
    let Some(found) = app.store.refresh_token(&presented).await? else {
        return Err(OAuthError::invalid_grant("the refresh token is invalid"));
    };
    let owned = app
        .store
        .grant(found.grant_id)
        .await?
        .is_some_and(|g| g.client_id == partner.client_id);
    if !owned {
        return Err(OAuthError::invalid_grant("the refresh token is invalid"));
    }
    // Everything that can fail without the token being at fault — shared state, the grant's
    // status, the scope — is settled before the token is spent: a refresh that fails for our
    // reasons must leave the partner's token usable, not turn its retry into a "reuse".
    if found.expires_at <= app.clock.now() {
        return Err(OAuthError::invalid_grant("the refresh token has expired"));
    }
    let grant = usable_grant(app, found.grant_id).await?;
    // RFC 6749 §6: a refresh may narrow the scope, never widen it.
    let scopes = match form.get("scope") {
        Some(requested) => {
            let requested = FieldSet::parse(requested)
                .map_err(|e| OAuthError::new(OAuthErrorCode::InvalidScope, e.to_string()))?;
            if !requested.is_subset(&grant.scopes) {
                return Err(OAuthError::new(
                    OAuthErrorCode::InvalidScope,
                    "the requested scope exceeds the grant",
                ));
            }
            requested
        }
        None => grant.scopes.clone(),
    };
    let spent_at = app.clock.now();
    let record = match app.store.spend_refresh_token(&presented, spent_at).await? {
        RefreshOutcome::Spent(record) => record,
        RefreshOutcome::AlreadySpent(record) => {
            // A spent token came back: either the partner or a thief holds a copy. Both lose.
            tracing::warn!(grant_id = %record.grant_id, "refresh token reused; revoking the grant");
            grants::revoke(app, record.grant_id, RevokedBy::RefreshTokenReuse).await?;
            return Err(OAuthError::invalid_grant(
                "the refresh token is no longer valid",
            ));
        }
        RefreshOutcome::Unknown => {
            return Err(OAuthError::invalid_grant("the refresh token is invalid"));
        }
    };
    match issue(app, partner, &grant, &scopes, Some(record.id.clone())).await {
        Ok(tokens) => Ok(tokens),
        Err(e) => {
            // Nothing was issued: give the token back, as for codes.
            if let Err(restore) = app.store.unspend_refresh_token(&record.id, spent_at).await {
                tracing::warn!(error = %restore, "restoring an unspent refresh token failed");
            }
            Err(e)
        }
    }
}

async fn usable_grant(app: &App, id: crate::domain::GrantId) -> Result<Grant, OAuthError> {
    let grant = app.store.grant(id).await?;
    match grant {
        Some(grant)
            if grant.is_usable_at(app.clock.now()) && grants::is_active(app, id).await? =>
        {
            Ok(grant)
        }
        _ => Err(OAuthError::invalid_grant(
            "the grant has been revoked or has expired",
        )),
    }
}

/// Signs an access token and stores the next refresh token of the chain.
async fn issue(
    app: &App,
    partner: &Partner,
    grant: &Grant,
    scopes: &FieldSet,
    parent: Option<String>,
) -> Result<TokenResponse, OAuthError> {
    let now = app.clock.now();
    let ttl = app.settings.access_token_ttl_seconds;
    let claims = AccessClaims {
        iss: app.issuer(),
        aud: app.settings.audience(),
        sub: pairwise_subject(&partner.client_id, &grant.customer_id),
        client_id: partner.client_id.clone(),
        grant_id: grant.id,
        scope: scopes.clone(),
        jti: uuid::Uuid::new_v4().to_string(),
        iat: now.timestamp(),
        exp: now.timestamp() + i64::from(ttl),
    };
    let access_token = app.keys.sign(&claims)?;
    let refresh_token = random_token("kh_rt_").map_err(anyhow::Error::from)?;
    app.store
        .insert_refresh_token(
            grant.id,
            token_hash(refresh_token.expose()),
            parent,
            now,
            grant.expires_at,
        )
        .await?;
    tracing::info!(grant_id = %grant.id, client_id = %partner.client_id, jti = %claims.jti, "tokens issued");
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: ttl,
        refresh_token: refresh_token.expose().to_owned(),
        scope: scopes.to_string(),
    })
}
