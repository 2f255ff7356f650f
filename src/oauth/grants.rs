//! Whether a grant may still be used, answered from shared state so that a revocation done by
//! any instance is seen by every instance on the very next call.

use crate::app::App;
use crate::domain::ClientId;
use crate::domain::GrantId;
use crate::error::Internal;
use crate::state::{GrantStatus, PartnerState};
use crate::store::{GrantState, PartnerStatus, RevokedBy};
use std::time::Duration;

/// How long a revocation marker outlives the grant's own expiry; after that, expiry refuses.
const REVOKED_MARKER_MIN: Duration = Duration::from_secs(3600);

fn ttl_until(app: &App, until: chrono::DateTime<chrono::Utc>) -> Duration {
    (until - app.clock.now())
        .to_std()
        .unwrap_or(Duration::ZERO)
        .max(REVOKED_MARKER_MIN)
}

/// Active and unexpired? Shared state first; on a miss the database decides and the answer is
/// cached until the grant would expire.
pub async fn is_active(app: &App, id: GrantId) -> Result<bool, Internal> {
    let now = app.clock.now();
    if let Some(status) = app.state.grant_status(id).await? {
        return Ok(status.is_active_at(now));
    }
    Ok(status_from_store(app, id).await?.status.is_active_at(now))
}

/// What the database says of a grant when shared state did not know it.
#[derive(Debug)]
pub struct StoredStatus {
    /// The status now in force (shared state's, if another instance decided meanwhile).
    pub status: GrantStatus,
    /// Its access tokens revoked before their expiry.
    revoked_tokens: Vec<String>,
}

impl StoredStatus {
    /// Whether the database holds this token revoked: shared state's marker may have been
    /// lost with the status that was just missing.
    pub fn revokes(&self, jti: &str) -> bool {
        self.revoked_tokens.iter().any(|t| t == jti)
    }
}

/// A grant's status as the database has it, cached in shared state — for when shared state
/// did not know it (the partner path's gate asked already). The grant's revoked tokens are
/// put back first, so that wherever shared state knows the status it knows them too.
pub async fn status_from_store(app: &App, id: GrantId) -> Result<StoredStatus, Internal> {
    let now = app.clock.now();
    // Before the database is read: a revocation committed after our read may be lost with an
    // epoch that ends meanwhile, and then our answer must not be cached in the next one.
    let since = app.state.since().await?;
    let Some(grant) = app.store.grant(id).await? else {
        return Ok(StoredStatus {
            status: GrantStatus::Revoked,
            revoked_tokens: Vec::new(),
        });
    };
    let status = match grant.state {
        GrantState::Active => GrantStatus::Active {
            expires_at: grant.expires_at,
        },
        GrantState::Revoked { .. } => GrantStatus::Revoked,
    };
    // A revoked grant refuses every token of its own: its revoked ones need not come back.
    let revoked_tokens = match status {
        GrantStatus::Active { .. } => app.store.revoked_access_tokens(id, now).await?,
        GrantStatus::Revoked => Vec::new(),
    };
    let revoked: Vec<(String, Duration)> = revoked_tokens
        .into_iter()
        .map(|(jti, expires_at)| {
            let ttl = (expires_at - now)
                .to_std()
                .unwrap_or(Duration::from_secs(1));
            (jti, ttl)
        })
        .collect();
    app.state.revoke_jtis(&revoked).await?;
    // Only if absent: a revocation by another instance after our read must stand.
    let status = app
        .state
        .fill_grant_status(id, status, ttl_until(app, grant.expires_at), &since)
        .await?;
    Ok(StoredStatus {
        status,
        revoked_tokens: revoked.into_iter().map(|(jti, _)| jti).collect(),
    })
}

/// Records a new grant as active in shared state.
pub async fn publish_active(
    app: &App,
    id: GrantId,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> Result<(), Internal> {
    app.state
        .put_grant_status(
            id,
            GrantStatus::Active { expires_at },
            ttl_until(app, expires_at),
        )
        .await?;
    Ok(())
}

/// Ends a grant everywhere. Shared state is written first: if the database write then fails the
/// grant is already refused (fail closed) and the caller sees an error and may retry. It is
/// written again once the database holds the revocation: should Redis have lost the first
/// write meanwhile (and a refill have read the database just before the commit), the second
/// one still lands after anything that refill could have cached.
pub async fn revoke(app: &App, id: GrantId, by: RevokedBy) -> Result<bool, Internal> {
    let expires_at = app
        .store
        .grant(id)
        .await?
        .map(|g| g.expires_at)
        .unwrap_or_else(|| app.clock.now());
    let ttl = ttl_until(app, expires_at);
    app.state
        .put_grant_status(id, GrantStatus::Revoked, ttl)
        .await?;
    let changed = app.store.revoke_grant(id, by, app.clock.now()).await?;
    app.state
        .put_grant_status(id, GrantStatus::Revoked, ttl)
        .await?;
    if changed {
        tracing::info!(grant_id = %id, revoked_by = by.as_str(), "grant revoked");
    }
    Ok(changed)
}

/// How long a partner's status is cached in shared state; suspension overwrites it at once.
const PARTNER_STATE_TTL: Duration = Duration::from_secs(3600);

/// Whether a partner may call, from the database, cached in shared state.
pub async fn partner_state(app: &App, client: &ClientId) -> Result<PartnerState, Internal> {
    // Before the database is read, as for a grant's status.
    let since = app.state.since().await?;
    let state = match app.store.partner(client).await? {
        Some(p) if p.status == PartnerStatus::Active => PartnerState::Active,
        _ => PartnerState::Suspended,
    };
    // Only if absent: a suspension written after our read must not be overwritten by it.
    Ok(app
        .state
        .fill_partner_state(client, state, PARTNER_STATE_TTL, &since)
        .await?)
}

/// Contains a partner for an alert, unless a person changed its status after `unchanged_since`.
/// The database decides (one conditional update), then shared state follows it; read back
/// afterwards, so that a reinstatement landing between the two writes is what stays in force
/// on every instance, not this suspension. Returns whether the partner was suspended.
pub async fn suspend_unless_changed(
    app: &App,
    client: &ClientId,
    unchanged_since: chrono::DateTime<chrono::Utc>,
) -> Result<bool, Internal> {
    let now = app.clock.now();
    if !app
        .store
        .suspend_partner_unless_changed(client, unchanged_since, now)
        .await?
    {
        return Ok(false);
    }
    app.state
        .put_partner_state(client, PartnerState::Suspended, PARTNER_STATE_TTL)
        .await?;
    let still_suspended = app
        .store
        .partner(client)
        .await?
        .is_none_or(|p| p.status == PartnerStatus::Suspended);
    if !still_suspended {
        app.state
            .put_partner_state(client, PartnerState::Active, PARTNER_STATE_TTL)
            .await?;
    }
    Ok(true)
}

/// Suspends or reinstates a partner everywhere, failing closed either way: a suspension is
/// written to shared state first (every instance refuses the next call even if the database
/// write then fails) and again after it (as for a grant's revocation), a reinstatement to the
/// database first (a failure leaves it suspended).
pub async fn set_partner_status(
    app: &App,
    client: &ClientId,
    status: PartnerStatus,
) -> Result<(), Internal> {
    let now = app.clock.now();
    match status {
        PartnerStatus::Suspended => {
            app.state
                .put_partner_state(client, PartnerState::Suspended, PARTNER_STATE_TTL)
                .await?;
            app.store.set_partner_status(client, status, now).await?;
            app.state
                .put_partner_state(client, PartnerState::Suspended, PARTNER_STATE_TTL)
                .await?;
        }
        PartnerStatus::Active => {
            app.store.set_partner_status(client, status, now).await?;
            app.state
                .put_partner_state(client, PartnerState::Active, PARTNER_STATE_TTL)
                .await?;
        }
    }
    tracing::info!(client_id = %client, status = ?status, "partner status changed");
    Ok(())
}
