//! Access tokens revoked before their expiry. Shared state refuses them on every call; these
//! rows are what that refusal is rebuilt from when shared state has lost it (see
//! `state/epoch.rs`). A row is useless once its token has expired, and goes then.

use super::{Store, StoreError};
use crate::domain::GrantId;
use chrono::{DateTime, Utc};
use entity::revoked_tokens;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect, Set};

/// At most this many revoked tokens of one grant are read back. The token endpoint ends a
/// grant long before (`oauth::revocation::MAX_LIVE_REVOKED`), so this only bounds a read.
const MAX_PER_GRANT: u64 = 10_000;

impl Store {
    /// Records a revoked token (again is a no-op), and clears the rows of tokens that have
    /// expired since: revocations are rare, so this keeps the table small without a sweeper.
    pub async fn revoke_access_token(
        &self,
        jti: &str,
        grant_id: GrantId,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let model = revoked_tokens::ActiveModel {
            jti: Set(jti.to_owned()),
            grant_id: Set(grant_id.to_string()),
            revoked_at: Set(now),
            expires_at: Set(expires_at),
        };
        revoked_tokens::Entity::insert(model)
            .on_conflict_do_nothing_on([revoked_tokens::Column::Jti])
            .exec_without_returning(&self.db)
            .await?;
        revoked_tokens::Entity::delete_many()
            .filter(revoked_tokens::Column::ExpiresAt.lt(now))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// The grant's revoked tokens that have not expired yet, with their expiry.
    pub async fn revoked_access_tokens(
        &self,
        grant_id: GrantId,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        Ok(revoked_tokens::Entity::find()
            .filter(revoked_tokens::Column::GrantId.eq(grant_id.to_string()))
            .filter(revoked_tokens::Column::ExpiresAt.gt(now))
            .limit(MAX_PER_GRANT)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| (m.jti, m.expires_at))
            .collect())
    }

    /// How many of the grant's revoked tokens have not expired yet.
    pub async fn live_revoked_access_tokens(
        &self,
        grant_id: GrantId,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        Ok(revoked_tokens::Entity::find()
            .filter(revoked_tokens::Column::GrantId.eq(grant_id.to_string()))
            .filter(revoked_tokens::Column::ExpiresAt.gt(now))
            .count(&self.db)
            .await?)
    }
}
