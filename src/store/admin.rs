use super::{Store, StoreError, map_insert_error};
use chrono::{DateTime, Utc};
use entity::{admin_audit, admin_tokens};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminToken {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<admin_tokens::Model> for AdminToken {
    fn from(m: admin_tokens::Model) -> Self {
        Self {
            id: m.id,
            name: m.name,
            created_at: m.created_at,
            revoked_at: m.revoked_at,
        }
    }
}

/// One call to the security team's API: who (which token), what, when, and the answer
/// (`status` 0: the call was recorded but never finished, e.g. the client went away).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AdminAuditEntry {
    pub at: DateTime<Utc>,
    pub request_id: String,
    pub token_id: Option<String>,
    pub token_name: Option<String>,
    pub method: String,
    /// The path, at most 64 characters: the caller chose it.
    pub path: String,
    /// SHA-256 (hex) of the query string, which may be long and is the caller's too.
    pub query_sha256: Option<String>,
    pub status: u16,
    pub client_ip: Option<String>,
    /// The console account that acted (its id and e-mail); null for token calls.
    pub console_user_id: Option<String>,
    pub console_user_email: Option<String>,
    /// The reason given for a suspension, reinstatement or revocation in the console.
    pub reason: Option<String>,
}

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

    /// The unrevoked token with this hash.
    pub async fn active_admin_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<AdminToken>, StoreError> {
        Ok(admin_tokens::Entity::find()
            .filter(admin_tokens::Column::TokenHash.eq(token_hash))
            .filter(admin_tokens::Column::RevokedAt.is_null())
            .one(&self.db)
            .await?
            .map(Into::into))
    }

    pub async fn admin_tokens(&self) -> Result<Vec<AdminToken>, StoreError> {
        Ok(admin_tokens::Entity::find()
            .order_by_asc(admin_tokens::Column::CreatedAt)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Revokes a token by id; false when no unrevoked token has it.
    pub async fn revoke_admin_token(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = admin_tokens::Entity::update_many()
            .col_expr(admin_tokens::Column::RevokedAt, Expr::value(now))
            .filter(admin_tokens::Column::Id.eq(id))
            .filter(admin_tokens::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Records an admin call before it runs; returns the row's id for [`Self::finish_admin_audit`].
    pub async fn insert_admin_audit(&self, entry: AdminAuditEntry) -> Result<i64, StoreError> {
        let row = admin_audit::ActiveModel {
            at: Set(entry.at),
            request_id: Set(entry.request_id),
            token_id: Set(entry.token_id),
            token_name: Set(entry.token_name),
            method: Set(entry.method),
            path: Set(entry.path),
            query_sha256: Set(entry.query_sha256),
            status: Set(i32::from(entry.status)),
            client_ip: Set(entry.client_ip),
            console_user_id: Set(entry.console_user_id),
            console_user_email: Set(entry.console_user_email),
            reason: Set(entry.reason),
            ..Default::default()
        }
        .insert(&self.db)
        .await?;
        Ok(row.id)
    }

    /// Sets the answer's status on a recorded call.
    pub async fn finish_admin_audit(&self, id: i64, status: u16) -> Result<(), StoreError> {
        admin_audit::Entity::update_many()
            .col_expr(admin_audit::Column::Status, Expr::value(i32::from(status)))
            .filter(admin_audit::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Records, before the action runs, the reason a person gave for it: an action whose reason
    /// cannot be recorded does not happen.
    pub async fn set_admin_audit_reason(&self, id: i64, reason: &str) -> Result<(), StoreError> {
        admin_audit::Entity::update_many()
            .col_expr(admin_audit::Column::Reason, Expr::value(reason))
            .filter(admin_audit::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Removes the admin-call records from before `before`; one statement, so one transaction.
    pub async fn delete_admin_audit_before(
        &self,
        before: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let result = admin_audit::Entity::delete_many()
            .filter(admin_audit::Column::At.lt(before))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected)
    }

    /// The newest admin calls first, below `before` (an id) when given; with their ids.
    pub async fn admin_audit(
        &self,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<(i64, AdminAuditEntry)>, StoreError> {
        let mut query = admin_audit::Entity::find();
        if let Some(before) = before {
            query = query.filter(admin_audit::Column::Id.lt(before));
        }
        Ok(query
            .order_by_desc(admin_audit::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| {
                (
                    m.id,
                    AdminAuditEntry {
                        at: m.at,
                        request_id: m.request_id,
                        token_id: m.token_id,
                        token_name: m.token_name,
                        method: m.method,
                        path: m.path,
                        query_sha256: m.query_sha256,
                        status: u16::try_from(m.status).unwrap_or(0),
                        client_ip: m.client_ip,
                        console_user_id: m.console_user_id,
                        console_user_email: m.console_user_email,
                        reason: m.reason,
                    },
                )
            })
            .collect())
    }
}
