use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use entity::signing_keys;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter,
    QueryOrder, TransactionTrait,
};

#[derive(Clone)]
pub struct StoredKey {
    pub kid: String,
    /// The private key as stored: PKCS#8 DER sealed under the encryption key kept outside the
    /// database (`tokens::sealing`), or plain PKCS#8 DER in a database from before sealing,
    /// until the next start seals it. Never logged.
    pub private_key: Vec<u8>,
    pub public_key: Vec<u8>,
    pub created_at: DateTime<Utc>,
    /// When it stops signing: its successor's activation time, which may be ahead.
    pub retired_at: Option<DateTime<Utc>>,
    /// When it starts signing; `None` for a key active since it was stored (the first key of
    /// a database, and keys from before activation times).
    pub activates_at: Option<DateTime<Utc>>,
}

impl StoredKey {
    /// When it starts signing: its activation time, or when it was stored.
    pub fn signs_from(&self) -> DateTime<Utc> {
        self.activates_at.unwrap_or(self.created_at)
    }
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .field("activates_at", &self.activates_at)
            .finish_non_exhaustive()
    }
}

/// A stored private key to overwrite, only if it still holds what the caller read.
pub struct KeyReplacement {
    pub kid: String,
    pub expected: Vec<u8>,
    pub private_key: Vec<u8>,
}

impl From<signing_keys::Model> for StoredKey {
    fn from(m: signing_keys::Model) -> Self {
        Self {
            kid: m.kid,
            private_key: m.private_key,
            public_key: m.public_key,
            created_at: m.created_at,
            retired_at: m.retired_at,
            activates_at: m.activates_at,
        }
    }
}

impl Store {
    /// Keys still useful for verification: those that sign now or will, and those retired after
    /// `since`.
    pub async fn signing_keys(&self, since: DateTime<Utc>) -> Result<Vec<StoredKey>, StoreError> {
        Ok(signing_keys::Entity::find()
            .filter(
                Condition::any()
                    .add(signing_keys::Column::RetiredAt.is_null())
                    .add(signing_keys::Column::RetiredAt.gt(since)),
            )
            .order_by_desc(signing_keys::Column::CreatedAt)
            .all(&self.db)
            .await?
            .into_iter()
            .map(StoredKey::from)
            .collect())
    }

    /// Every token-signing key ever used, retired ones included. (Checkpoints are not signed
    /// with these: see `access_log::key`.)
    pub async fn all_signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        Ok(signing_keys::Entity::find()
            .order_by_desc(signing_keys::Column::CreatedAt)
            .all(&self.db)
            .await?
            .into_iter()
            .map(StoredKey::from)
            .collect())
    }

    /// Overwrites private keys (to seal or re-seal them), all or none. Each must still hold
    /// the value the caller read, so a concurrent writer's value is never lost.
    pub async fn replace_private_keys(
        &self,
        replacements: Vec<KeyReplacement>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin().await?;
        for r in replacements {
            let updated = signing_keys::Entity::update_many()
                .col_expr(signing_keys::Column::PrivateKey, Expr::value(r.private_key))
                .filter(signing_keys::Column::Kid.eq(r.kid.as_str()))
                .filter(signing_keys::Column::PrivateKey.eq(r.expected))
                .exec(&txn)
                .await?;
            if updated.rows_affected != 1 {
                txn.rollback().await?;
                return Err(StoreError::Changed(format!("signing key {}", r.kid)));
            }
        }
        txn.commit().await?;
        Ok(())
    }

    /// Adds a key and, atomically, retires from the moment it takes over every key that would
    /// still sign then: the current key, and a key still pending (which then signs until that
    /// moment, or never if it was due later).
    pub async fn add_signing_key(&self, key: StoredKey) -> Result<(), StoreError> {
        let takes_over = key.signs_from();
        let txn = self.db.begin().await?;
        signing_keys::Entity::update_many()
            .col_expr(signing_keys::Column::RetiredAt, Expr::value(takes_over))
            .filter(
                Condition::any()
                    .add(signing_keys::Column::RetiredAt.is_null())
                    .add(signing_keys::Column::RetiredAt.gt(takes_over)),
            )
            .exec(&txn)
            .await?;
        signing_keys::ActiveModel {
            kid: Set(key.kid),
            private_key: Set(key.private_key),
            public_key: Set(key.public_key),
            created_at: Set(key.created_at),
            retired_at: Set(None),
            activates_at: Set(key.activates_at),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        Ok(())
    }
}
