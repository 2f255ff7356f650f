use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use entity::chain_checkpoints;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};

/// A chain's hash at one record, signed: the chain's records up to `seq` cannot be edited,
/// removed or reordered without breaking either the chain or this signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCheckpoint {
    pub chain: String,
    pub seq: i64,
    pub hash: String,
    pub kid: String,
    /// A compact JWS; see `access_log::checkpoint`.
    pub signature: String,
    pub signed_at: DateTime<Utc>,
}

impl From<chain_checkpoints::Model> for StoredCheckpoint {
    fn from(m: chain_checkpoints::Model) -> Self {
        Self {
            chain: m.chain,
            seq: m.seq,
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
        let model = chain_checkpoints::ActiveModel {
            chain: Set(c.chain),
            seq: Set(c.seq),
            hash: Set(c.hash),
            kid: Set(c.kid),
            signature: Set(c.signature),
            signed_at: Set(c.signed_at),
        };
        chain_checkpoints::Entity::insert(model)
            .on_conflict_do_nothing_on([
                chain_checkpoints::Column::Chain,
                chain_checkpoints::Column::Seq,
            ])
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// The chains that have checkpoints, in name order.
    pub async fn checkpoint_chains(&self) -> Result<Vec<String>, StoreError> {
        Ok(chain_checkpoints::Entity::find()
            .select_only()
            .column(chain_checkpoints::Column::Chain)
            .distinct()
            .order_by_asc(chain_checkpoints::Column::Chain)
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// The newest checkpoint of any chain: how long ago the log was last signed.
    pub async fn newest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(chain_checkpoints::Entity::find()
            .order_by_desc(chain_checkpoints::Column::SignedAt)
            .limit(1)
            .one(&self.db)
            .await?
            .map(Into::into))
    }

    /// The newest checkpoint of `chain`.
    pub async fn latest_checkpoint(
        &self,
        chain: &str,
    ) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(chain_checkpoints::Entity::find()
            .filter(chain_checkpoints::Column::Chain.eq(chain))
            .order_by_desc(chain_checkpoints::Column::Seq)
            .limit(1)
            .one(&self.db)
            .await?
            .map(Into::into))
    }

    /// The first checkpoint of `chain` at or after `seq`: the signature that covers that record.
    pub async fn covering_checkpoint(
        &self,
        chain: &str,
        seq: i64,
    ) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(chain_checkpoints::Entity::find()
            .filter(chain_checkpoints::Column::Chain.eq(chain))
            .filter(chain_checkpoints::Column::Seq.gte(seq))
            .order_by_asc(chain_checkpoints::Column::Seq)
            .limit(1)
            .one(&self.db)
            .await?
            .map(Into::into))
    }

    /// Checkpoints of the records `from..=through` of `chain`, oldest first.
    pub async fn checkpoints_between(
        &self,
        chain: &str,
        from: i64,
        through: i64,
    ) -> Result<Vec<StoredCheckpoint>, StoreError> {
        Ok(chain_checkpoints::Entity::find()
            .filter(chain_checkpoints::Column::Chain.eq(chain))
            .filter(chain_checkpoints::Column::Seq.gte(from))
            .filter(chain_checkpoints::Column::Seq.lte(through))
            .order_by_asc(chain_checkpoints::Column::Seq)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }
}
