//! RFC 7009. Revoking a refresh token ends its whole grant; revoking an access token ends that
//! token (by `jti`) until it would have expired.

use super::form::Form;
use super::grants;
use crate::app::App;
use crate::error::OAuthError;
use crate::secrets::token_hash;
use crate::store::{Partner, RevokedBy};
use std::time::Duration;

/// More live revoked access tokens than this on one grant end the grant.
pub const MAX_LIVE_REVOKED: u64 = 100;

pub async fn revoke(app: &App, partner: &Partner, form: &Form) -> Result<(), OAuthError> {
    let token = form.require("token")?;
    // The hint only orders the lookups (RFC 7009 §2.1); both kinds are always tried.
    let access_first = form.get("token_type_hint") == Some("access_token");
    if access_first && revoke_access_token(app, partner, token).await? {
        return Ok(());
    }
    if revoke_refresh_token(app, partner, token).await? {
        return Ok(());
    }
    if !access_first {
        revoke_access_token(app, partner, token).await?;
    }
    // Unknown, expired or foreign tokens get the same 200 (RFC 7009 §2.2), so a client learns
    // nothing about tokens that are not its own.
    Ok(())
}

async fn revoke_refresh_token(
    app: &App,
    partner: &Partner,
    token: &str,
) -> Result<bool, OAuthError> {
    let Some(record) = app.store.refresh_token(&token_hash(token)).await? else {
        return Ok(false);
    };
    let Some(grant) = app.store.grant(record.grant_id).await? else {
        return Ok(false);
    };
    if grant.client_id != partner.client_id {
        tracing::warn!(client_id = %partner.client_id, "tried to revoke another client's token");
        return Ok(true);
    }
    grants::revoke(app, grant.id, RevokedBy::Partner).await?;
    Ok(true)
}

async fn revoke_access_token(
    app: &App,
    partner: &Partner,
    token: &str,
) -> Result<bool, OAuthError> {
    let Ok(claims) = app.verifier.verify(token, app.clock.now()) else {
        return Ok(false);
    };
    if claims.client_id != partner.client_id {
        tracing::warn!(client_id = %partner.client_id, "tried to revoke another client's token");
        return Ok(true);
    }
    let now = app.clock.now();
    let remaining = (claims.exp + crate::tokens::LEEWAY_SECONDS - now.timestamp()).max(1);
    // Shared state first, so every instance refuses the token at once; then the database,
    // from which shared state is rebuilt if it loses the marker; then shared state again, in
    // case it lost the first marker before the database had the row (see `grants::revoke`).
    // Any of them failing is an error the partner sees (and may retry).
    let ttl = Duration::from_secs(remaining.unsigned_abs());
    app.state.revoke_jti(&claims.jti, ttl).await?;
    let expires_at = now + chrono::Duration::seconds(remaining);
    app.store
        .revoke_access_token(&claims.jti, claims.grant_id, now, expires_at)
        .await?;
    app.state.revoke_jti(&claims.jti, ttl).await?;
    tracing::info!(jti = %claims.jti, grant_id = %claims.grant_id, "access token revoked");
    // Each live revoked token is a row the grant's status refill reads back; a partner that
    // revokes this many of one grant's tokens within their five minutes is broken or hostile,
    // and loses the grant rather than growing that work.
    if app
        .store
        .live_revoked_access_tokens(claims.grant_id, now)
        .await?
        > MAX_LIVE_REVOKED
    {
        tracing::warn!(grant_id = %claims.grant_id, "too many access tokens of one grant revoked; revoking the grant");
        grants::revoke(app, claims.grant_id, RevokedBy::Partner).await?;
    }
    Ok(true)
}
