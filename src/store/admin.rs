use super::{Store, StoreError, map_insert_error};
use chrono::{DateTime, Utc};
use entity::admin_tokens;
use sea_orm::{ActiveModelTrait, ActiveValue::Set};

impl Store {
    /// Stores a security-team token by its hash; returns its id.
    pub async fn insert_admin_token(
        &self,
        name: &str,
        token_hash: String,
        now: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        admin_tokens::ActiveModel {
            id: Set(id.clone()),
            name: Set(name.to_owned()),
            token_hash: Set(token_hash),
            created_at: Set(now),
            revoked_at: Set(None),
        }
        .insert(&self.db)
        .await
        .map_err(|e| map_insert_error(e, "admin token"))?;
        Ok(id)
    }
}
