//! The gate a partner call passes before anything about the request itself is looked at:
//! the local limiter, then one question to shared state for grant, partner and token status
//! together with both shared limits (see `state::gate`). The common call costs one round
//! trip; only a status shared state has forgotten costs a database read and a second one.

use super::ProxyError;
use super::caches::{GrantFacts, PartnerProfile};
use super::ratelimit::{self, RateHeaders, Verdict};
use crate::app::App;
use crate::dpop::DpopError;
use crate::error::Internal;
use crate::state::{GateCheck, GateLimit, PartnerState};
use crate::tokens::AccessClaims;
use chrono::{DateTime, Utc};

/// Lets the call through with its rate-limit headers, or says why not. A revoked or expired
/// grant, a suspended partner or a revoked token is `InvalidToken` and spends nothing of the
/// shared limits.
pub async fn pass(
    app: &App,
    claims: &AccessClaims,
    grant: &GrantFacts,
    partner: &PartnerProfile,
    now: DateTime<Utc>,
    proof: Option<(&str, std::time::Duration)>,
) -> Result<RateHeaders, ProxyError> {
    // The local limiter first: when it refuses, shared state is not asked at all — except to
    // spend a DPoP proof, which must never be accepted twice, refused call or not.
    let local = app
        .proxy
        .limiter
        .check(&claims.client_id, claims.grant_id, &partner.limits);
    if matches!(local, Verdict::Refused { .. })
        && let Some((key, ttl)) = proof
    {
        app.state
            .spend_dpop_key(key, ttl)
            .await
            .map_err(Internal::from)?;
    }
    let headers = verdict(local)?;
    let limits = [
        GateLimit {
            key: &grant.limit_key,
            interval: partner.limits.grant.interval(),
            burst: partner.limits.grant.burst,
        },
        GateLimit {
            key: &partner.limit_key,
            interval: partner.limits.partner.interval(),
            burst: partner.limits.partner.burst,
        },
    ];
    let jti_key = app.state.jti_key(&claims.jti);
    let gate = app
        .state
        .gate(GateCheck {
            grant_key: &grant.status_key,
            partner_key: &partner.status_key,
            jti_key: &jti_key,
            proof,
            now,
            limits: Some(limits),
        })
        .await
        .map_err(Internal::from)?;
    if gate.proof_replayed {
        return Err(DpopError::Replayed.into());
    }
    if gate.jti_revoked {
        return Err(ProxyError::InvalidToken(
            "the token has been revoked".into(),
        ));
    }
    // What shared state does not know, the database answers (and shared state then keeps).
    let grant_active = match gate.grant {
        Some(status) => status.is_active_at(now),
        None => {
            let stored = crate::oauth::grants::status_from_store(app, claims.grant_id).await?;
            // Shared state had lost the status, so it may have lost the token's marker too.
            if stored.revokes(&claims.jti) {
                return Err(ProxyError::InvalidToken(
                    "the token has been revoked".into(),
                ));
            }
            stored.status.is_active_at(now)
        }
    };
    if !grant_active {
        return Err(ProxyError::InvalidToken(
            "the customer's consent has ended".into(),
        ));
    }
    let partner_state = match gate.partner {
        Some(state) => state,
        None => crate::oauth::grants::partner_state(app, &claims.client_id).await?,
    };
    if partner_state != PartnerState::Active {
        return Err(ProxyError::InvalidToken("the partner is suspended".into()));
    }
    let outcome = match gate.limits {
        Some(outcome) => outcome,
        // Shared state could not decide the status itself (it did not know it), so nothing
        // was spent: spend now, the one place a call makes a second round trip.
        None if app.state.shares_limits() => app
            .state
            .spend_limits(limits)
            .await
            .map_err(Internal::from)?,
        // One instance: the local limiter is the whole truth.
        None => return Ok(headers),
    };
    verdict(ratelimit::shared_verdict(&outcome, &partner.limits))
}

fn verdict(verdict: Verdict) -> Result<RateHeaders, ProxyError> {
    match verdict {
        Verdict::Allowed(headers) => Ok(headers),
        Verdict::Refused {
            retry_after_seconds,
            headers,
        } => Err(ProxyError::RateLimited {
            retry_after_seconds,
            headers,
        }),
    }
}
