//! Refresh tokens: stored as hashes, rotated on every use, forming a chain per grant.

use super::{Store, StoreError};
use crate::domain::GrantId;
use chrono::{DateTime, Utc};
use entity::refresh_tokens;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

#[derive(Debug, Clone)]
pub struct RefreshRecord {
    pub id: String,
    pub grant_id: GrantId,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<refresh_tokens::Model> for RefreshRecord {
    type Error = StoreError;

    fn try_from(m: refresh_tokens::Model) -> Result<Self, StoreError> {
        Ok(Self {
            grant_id: GrantId::parse(&m.grant_id).map_err(StoreError::corrupt)?,
            id: m.id,
            expires_at: m.expires_at,
            used_at: m.used_at,
            revoked_at: m.revoked_at,
        })
    }
}

/// The outcome of trying to spend a refresh token.
#[derive(Debug)]
pub enum RefreshOutcome {
    /// This call spent it; the caller issues the successor.
    Spent(RefreshRecord),
    /// It was spent or revoked before: a replay.
    AlreadySpent(RefreshRecord),
    Unknown,
}

impl Store {
    pub async fn insert_refresh_token(
        &self,
        grant_id: GrantId,
        token_hash: String,
        parent_id: Option<String>,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let model = refresh_tokens::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            grant_id: Set(grant_id.to_string()),
            token_hash: Set(token_hash),
            parent_id: Set(parent_id),
            created_at: Set(now),
            expires_at: Set(expires_at),
            used_at: Set(None),
            revoked_at: Set(None),
        };
        model.insert(&self.db).await?;
        Ok(())
    }

    pub async fn refresh_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<RefreshRecord>, StoreError> {
        refresh_tokens::Entity::find()
            .filter(refresh_tokens::Column::TokenHash.eq(token_hash))
            .one(&self.db)
            .await?
            .map(RefreshRecord::try_from)
            .transpose()
    }

    /// Marks the token spent with a conditional update, so of two concurrent uses exactly one
    /// succeeds and the other is treated as the replay it is.
    pub async fn spend_refresh_token(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<RefreshOutcome, StoreError> {
        let Some(record) = self.refresh_token(token_hash).await? else {
            return Ok(RefreshOutcome::Unknown);
        };
        if record.used_at.is_some() || record.revoked_at.is_some() {
            return Ok(RefreshOutcome::AlreadySpent(record));
        }
        let result = refresh_tokens::Entity::update_many()
            .col_expr(refresh_tokens::Column::UsedAt, Expr::value(now))
            .filter(refresh_tokens::Column::Id.eq(record.id.clone()))
            .filter(refresh_tokens::Column::UsedAt.is_null())
            .filter(refresh_tokens::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?;
        if result.rows_affected == 1 {
            Ok(RefreshOutcome::Spent(record))
        } else {
            Ok(RefreshOutcome::AlreadySpent(record))
        }
    }

    /// Gives a spent refresh token back when nothing was issued for it (the next one could not
    /// be stored): the partner's retry must be a first use, not a reuse that revokes the grant.
    /// Only the spend made at `spent_at` is undone.
    pub async fn unspend_refresh_token(
        &self,
        id: &str,
        spent_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        refresh_tokens::Entity::update_many()
            .col_expr(
                refresh_tokens::Column::UsedAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(refresh_tokens::Column::Id.eq(id))
            .filter(refresh_tokens::Column::UsedAt.eq(spent_at))
            .filter(refresh_tokens::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(())
    }
}
