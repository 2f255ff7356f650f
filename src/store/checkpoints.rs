use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use entity::log_checkpoints;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};

/// The chain's hash at one record, signed: records up to `record_id` cannot be edited,
/// removed or reordered without breaking either the chain or this signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCheckpoint {
    pub record_id: i64,
    pub hash: String,
    pub kid: String,
    /// A compact JWS; see `access_log::checkpoint`.
    pub signature: String,
    pub signed_at: DateTime<Utc>,
}

impl From<log_checkpoints::Model> for StoredCheckpoint {
    fn from(m: log_checkpoints::Model) -> Self {
        Self {
            record_id: m.record_id,
            hash: m.hash,
            kid: m.kid,
            signature: m.signature,
            signed_at: m.signed_at,
        }
    }
}

impl Store {
    /// Stores a checkpoint; another instance may have signed the same record already.
    pub async fn insert_checkpoint(&self, c: StoredCheckpoint) -> Result<(), StoreError> {
        let model = log_checkpoints::ActiveModel {
            record_id: Set(c.record_id),
            hash: Set(c.hash),
            kid: Set(c.kid),
            signature: Set(c.signature),
            signed_at: Set(c.signed_at),
        };
        log_checkpoints::Entity::insert(model)
            .on_conflict_do_nothing_on([log_checkpoints::Column::RecordId])
            .exec(&self.db)
            .await?;
        Ok(())
    }

    pub async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(log_checkpoints::Entity::find()
            .order_by_desc(log_checkpoints::Column::RecordId)
            .limit(1)
            .one(&self.db)
            .await?
            .map(Into::into))
    }

    /// Checkpoints of records `from..=through`, oldest first.
    pub async fn checkpoints_between(
        &self,
        from: i64,
        through: i64,
    ) -> Result<Vec<StoredCheckpoint>, StoreError> {
        Ok(log_checkpoints::Entity::find()
            .filter(log_checkpoints::Column::RecordId.gte(from))
            .filter(log_checkpoints::Column::RecordId.lte(through))
            .order_by_asc(log_checkpoints::Column::RecordId)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }
}
